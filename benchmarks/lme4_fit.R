# One timed lmer() fit (or glmer() for a GLM family), run by benchmarks/run.py in a
# fresh Rscript process.
#
#   Rscript benchmarks/lme4_fit.R data.csv "y ~ x + (1|s) + (1|i)" TRUE s,i [family nAGQ]
#
# Prints "RESULT<TAB>key<TAB>value" lines. Peak memory: VmHWM from
# /proc/self/status before (baseline, after data load) and after the fit; the
# caller also wraps the process in /usr/bin/time -v when it exists.

args <- commandArgs(trailingOnly = TRUE)
path <- args[1]
formula <- as.formula(args[2])
reml <- as.logical(args[3])
factors <- if (length(args) >= 4 && nzchar(args[4])) strsplit(args[4], ",")[[1]] else character()
family <- if (length(args) >= 5) args[5] else "gaussian"
nagq <- if (length(args) >= 6) as.integer(args[6]) else 1L

vm_hwm_mb <- function() {
  if (!file.exists("/proc/self/status")) return(NA_real_)
  line <- grep("^VmHWM", readLines("/proc/self/status"), value = TRUE)
  as.numeric(gsub("[^0-9]", "", line)) / 1024
}

suppressPackageStartupMessages(library(lme4))
if (requireNamespace("data.table", quietly = TRUE)) {
  reader <- "data.table::fread"
  d <- as.data.frame(data.table::fread(path))
} else {
  reader <- "read.csv"
  d <- read.csv(path)
}
for (f in factors) d[[f]] <- factor(d[[f]])
invisible(gc())
baseline <- vm_hwm_mb()
if (family == "gaussian") {
  timing <- system.time(m <- lmer(formula, data = d, REML = reml))
} else {
  timing <- system.time(m <- glmer(formula, data = d, family = family, nAGQ = nagq))
}
peak <- vm_hwm_mb()

criterion <- if (reml && family == "gaussian") m@devcomp$cmp[["REML"]] else m@devcomp$cmp[["dev"]]
messages <- c(m@optinfo$conv$lme4$messages, m@optinfo$warnings)
out <- list(
  reader = reader,
  elapsed_s = timing[["elapsed"]],
  user_s = timing[["user.self"]],
  n_evals = m@optinfo$feval,
  criterion = sprintf("%.10f", criterion),
  theta = paste(sprintf("%.10g", getME(m, "theta")), collapse = ";"),
  beta = paste(sprintf("%.10g", fixef(m)), collapse = ";"),
  baseline_mb = baseline,
  peak_mb = peak,
  lme4_version = as.character(packageVersion("lme4")),
  messages = paste(gsub("[\t\n]", " ", unlist(messages)), collapse = " | ")
)
for (k in names(out)) cat("RESULT\t", k, "\t", out[[k]], "\n", sep = "")
