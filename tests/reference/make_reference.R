#!/usr/bin/env Rscript
## Fit reference linear mixed models with lme4 and write
## tests/reference/lmm_reference.json for the Python test-suite.
##
## Usage (from the repo root):
##   Rscript tests/reference/export_datasets.R      # lme4 datasets -> data/*.csv
##   python  tests/reference/make_synthetic.py      # synthetic data -> data/*.csv
##   Rscript tests/reference/make_reference.R       # fits -> lmm_reference.json
##
## All fits use lme4's default controls (lmerControl(): optimizer "nloptwrap",
## i.e. NLopt BOBYQA, default tolerances and default starting values).
##
## Reading the CSVs
## ----------------
## Grouping / categorical columns are read as character and turned into factors
## whose levels are sorted in C-locale (byte) order -- sort(method = "radix") --
## which is what Python's sorted() gives.  This only affects the *order* of the
## ranef rows, never the fit (the JSON records the level label of every row).
## Numeric labels (sleepstudy$Subject, InstEval$s/$d/$dept/$service) are kept
## as factors, not numbers.
##
## Numbers in the JSON
## -------------------
## jsonlite caps output at 15 significant digits even with digits = NA, so
## numbers are formatted here with the shortest of %.15g / %.16g / %.17g that
## reads back to the identical double, and spliced in verbatim.
##
## Weights and the REML criterion  (checked; see check_weighted_criterion())
## ------------------------------------------------------------------------
## With prior weights w, lme4's objective (the devfun value, REMLcrit(),
## deviance(), logLik()) DOES include the -sum(log(w)) term, i.e. it is the
## exact Gaussian -2 log (restricted) likelihood of
##     y ~ N(X beta, sigma^2 (Z Lambda Lambda' Z' + W^{-1})).
## Concretely, for a REML fit
##     REMLcrit = -sum(log w) + ldL2 + ldRX2 + (n-p) (1 + log(2 pi pwrss / (n-p)))
## and for ML
##     deviance = -sum(log w) + ldL2 + n (1 + log(2 pi pwrss / n)).
## This script verifies both (a) against a dense, brute-force evaluation of the
## marginal (restricted) likelihood on sleepstudy with random weights, and
## (b) against the devcomp pieces of the synth_weights_reml fit.  The results
## of the check are printed and stored in the weighted case as
## "weights_check".

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

source(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))),
               "reference_helpers.R"))
ref_dir  <- get_script_dir()
data_dir <- file.path(ref_dir, "data")
out_file <- file.path(ref_dir, "lmm_reference.json")

## --------------------------------------------------------------------------
## data
## --------------------------------------------------------------------------
factor_cols <- list(
  "sleepstudy.csv"          = "Subject",
  "Penicillin.csv"          = c("plate", "sample"),
  "Pastes.csv"              = c("batch", "cask", "sample"),
  "Dyestuff.csv"            = "Batch",
  "Dyestuff2.csv"           = "Batch",
  "InstEval.csv"            = c("s", "d", "studage", "lectage", "service", "dept"),
  "synth_crossed_small.csv" = c("subject", "item", "cond"),
  "synth_crossed_large.csv" = c("subject", "item", "cond"),
  "synth_slopes.csv"        = c("subject", "item"),
  "synth_nested.csv"        = c("school", "class")
)

read_data <- function(file) read_reference_data(file, data_dir, factor_cols,
                                                  "export_datasets.R / make_synthetic.py")

## --------------------------------------------------------------------------
## cases
## --------------------------------------------------------------------------
case <- function(name, data, formula, reml, weights = NULL, offset = NULL)
  list(name = name, data = data, formula = formula, reml = reml,
       weights = weights, offset = offset)

cases <- list(
  case("sleepstudy_corr_reml",   "sleepstudy.csv", "Reaction ~ Days + (Days | Subject)", TRUE),
  case("sleepstudy_corr_ml",     "sleepstudy.csv", "Reaction ~ Days + (Days | Subject)", FALSE),
  case("sleepstudy_uncorr_reml", "sleepstudy.csv", "Reaction ~ Days + (Days || Subject)", TRUE),
  case("sleepstudy_uncorr_ml",   "sleepstudy.csv", "Reaction ~ Days + (Days || Subject)", FALSE),
  case("sleepstudy_intercept_slope_separate_reml", "sleepstudy.csv",
       "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", TRUE),
  case("penicillin_reml", "Penicillin.csv", "diameter ~ 1 + (1 | plate) + (1 | sample)", TRUE),
  case("penicillin_ml",   "Penicillin.csv", "diameter ~ 1 + (1 | plate) + (1 | sample)", FALSE),
  case("pastes_nested_reml",      "Pastes.csv", "strength ~ 1 + (1 | batch/cask)", TRUE),
  case("pastes_interaction_reml", "Pastes.csv", "strength ~ 1 + (1 | batch) + (1 | batch:cask)", TRUE),
  case("dyestuff_reml",  "Dyestuff.csv",  "Yield ~ 1 + (1 | Batch)", TRUE),
  case("dyestuff_ml",    "Dyestuff.csv",  "Yield ~ 1 + (1 | Batch)", FALSE),
  case("dyestuff2_reml", "Dyestuff2.csv", "Yield ~ 1 + (1 | Batch)", TRUE),
  case("insteval_reml", "InstEval.csv", "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept)", TRUE),
  case("synth_crossed_small_reml", "synth_crossed_small.csv",
       "y ~ x + cond + (1 | subject) + (1 | item)", TRUE),
  case("synth_crossed_small_ml",   "synth_crossed_small.csv",
       "y ~ x + cond + (1 | subject) + (1 | item)", FALSE),
  case("synth_crossed_large_reml", "synth_crossed_large.csv",
       "y ~ x + cond + (1 | subject) + (1 | item)", TRUE),
  case("synth_slopes_reml", "synth_slopes.csv",
       "y ~ x + (1 + x | subject) + (1 | item)", TRUE),
  case("synth_slopes_uncorr_ml", "synth_slopes.csv",
       "y ~ x + (1 + x || subject) + (1 | item)", FALSE),
  case("synth_weights_reml", "synth_slopes.csv",
       "y ~ x + (1 | subject) + (1 | item)", TRUE, weights = "w"),
  case("synth_offset_reml", "synth_slopes.csv",
       "y ~ x + (1 | subject) + (1 | item)", TRUE, offset = "off"),
  case("synth_rankdef_reml", "synth_slopes.csv",
       "y ~ x + x_dup + (1 | subject) + (1 | item)", TRUE),
  case("synth_nested_reml", "synth_nested.csv", "y ~ x + (1 | school/class)", TRUE)
)

## --------------------------------------------------------------------------
## JSON helpers: full-precision numbers spliced in verbatim
## --------------------------------------------------------------------------
## fmt_num, jnum, jarr, jstr_arr, na2null, to_json: see reference_helpers.R

## --------------------------------------------------------------------------
## fitting
## --------------------------------------------------------------------------
build_call <- function(cs, dev_fun_only = FALSE) {
  args <- list(formula = as.formula(cs$formula), data = quote(d), REML = cs$reml)
  if (!is.null(cs$weights)) args$weights <- as.name(cs$weights)
  if (!is.null(cs$offset))  args$offset  <- as.name(cs$offset)
  if (dev_fun_only) args$devFunOnly <- TRUE
  as.call(c(quote(lmer), args))
}

## eval_collect: see reference_helpers.R

fit_case <- function(cs) {
  d <- read_data(cs$data)
  env <- environment()
  fit <- eval_collect(build_call(cs), env)
  m <- fit$value

  theta <- getME(m, "theta")
  lower <- getME(m, "lower")
  theta_start <- ifelse(lower == 0, 1, 0)

  devfun <- eval_collect(build_call(cs, dev_fun_only = TRUE), env)$value
  pts <- list(fitted = unname(theta), start = unname(theta_start),
              scaled_0.7 = unname(theta) * 0.7)
  objective_at <- lapply(names(pts), function(k)
    list(label = k, theta = jarr(pts[[k]]), value = jnum(devfun(pts[[k]]))))

  crit <- if (cs$reml) REMLcrit(m) else deviance(m)
  obj_fit <- devfun(unname(theta))
  if (abs(obj_fit - crit) > 1e-8 * max(1, abs(crit)))
    warning(sprintf("%s: devfun(theta_hat)=%.10g differs from criterion %.10g",
                    cs$name, obj_fit, crit))

  ll <- logLik(m)
  fe <- fixef(m)
  se <- sqrt(diag(as.matrix(vcov(m))))
  ng <- ngrps(m)

  vc <- as.data.frame(VarCorr(m))
  varcorr <- lapply(seq_len(nrow(vc)), function(i)
    list(grp = as.character(vc$grp[i]), var1 = na2null(vc$var1[i]),
         var2 = na2null(vc$var2[i]), vcov = jnum(vc$vcov[i]),
         sdcor = jnum(vc$sdcor[i])))

  re <- as.data.frame(ranef(m, condVar = TRUE))
  ranef_rows <- lapply(seq_len(nrow(re)), function(i)
    list(grpvar = as.character(re$grpvar[i]), term = as.character(re$term[i]),
         grp = as.character(re$grp[i]), condval = jnum(re$condval[i]),
         condsd = jnum(re$condsd[i])))

  conv_msgs <- m@optinfo$conv$lme4$messages
  w_prior <- weights(m, method = "prior")

  list(
    name = cs$name, data = cs$data, formula = cs$formula, reml = cs$reml,
    weights = cs$weights, offset = cs$offset,
    nobs = nobs(m),
    ngroups = as.list(setNames(as.integer(ng), names(ng))),
    theta = jarr(theta), theta_names = jstr_arr(names(theta)),
    lower = jarr(ifelse(is.finite(lower), lower, NA)),   # null = -Inf
    fixef_names = jstr_arr(names(fe)), fixef = jarr(fe),
    se = jarr(unname(se[names(fe)])),
    sigma = jnum(sigma(m)),
    reml_criterion = if (cs$reml) jnum(REMLcrit(m)) else NULL,
    deviance = jnum(if (cs$reml) deviance(m, REML = FALSE) else deviance(m)),
    loglik = jnum(as.numeric(ll)),
    aic = jnum(AIC(m)), bic = jnum(BIC(m)),
    df = as.integer(attr(ll, "df")),
    singular = isSingular(m),
    converged_messages = jstr_arr(if (is.null(conv_msgs)) character(0) else conv_msgs),
    optimizer_warnings = jstr_arr(unlist(m@optinfo$warnings)),
    fit_messages = jstr_arr(fit$messages),
    fit_warnings = jstr_arr(fit$warnings),
    optimizer = m@optinfo$optimizer,
    n_evals = as.integer(m@optinfo$feval),
    sum_log_weights = jnum(sum(log(w_prior))),
    varcorr = varcorr,
    ranef = ranef_rows,
    objective_at = objective_at,
    fit_seconds = jnum(round(fit$elapsed, 3)),
    .model = m
  )
}

## --------------------------------------------------------------------------
## weights check: does lme4's criterion include -sum(log(w))?
## --------------------------------------------------------------------------
## (a) dense brute force on sleepstudy with random weights
dense_criteria <- function(m) {
  y <- getME(m, "y"); X <- getME(m, "X"); Z <- as.matrix(getME(m, "Z"))
  L <- as.matrix(getME(m, "Lambda")); w <- weights(m, method = "prior")
  n <- length(y); p <- ncol(X)
  V0 <- Z %*% L %*% t(L) %*% t(Z) + diag(1 / w, n)
  Vi <- solve(V0)
  XtViX <- t(X) %*% Vi %*% X
  beta <- solve(XtViX, t(X) %*% Vi %*% y)
  r <- y - X %*% beta
  q <- drop(t(r) %*% Vi %*% r)
  ldV <- as.numeric(determinant(V0)$modulus)
  ldX <- as.numeric(determinant(XtViX)$modulus)
  c(REML = ldV + ldX + (n - p) * (1 + log(2 * pi * q / (n - p))),
    ML   = ldV + n * (1 + log(2 * pi * q / n)),
    sum_log_w = sum(log(w)))
}

check_weighted_criterion <- function(m_synth) {
  set.seed(1)
  ss <- lme4::sleepstudy
  ss$w <- runif(nrow(ss), 0.5, 2)
  mr <- lmer(Reaction ~ Days + (Days | Subject), ss, weights = w, REML = TRUE)
  mm <- lmer(Reaction ~ Days + (Days | Subject), ss, weights = w, REML = FALSE)
  dr <- dense_criteria(mr); dm <- dense_criteria(mm)
  ## (b) devcomp pieces of the real weighted case
  cmp <- m_synth@devcomp$cmp
  n <- m_synth@devcomp$dims[["n"]]; p <- length(fixef(m_synth))
  ldW <- sum(log(weights(m_synth, method = "prior")))
  from_pieces <- -ldW + cmp[["ldL2"]] + cmp[["ldRX2"]] +
    (n - p) * (1 + log(2 * pi * cmp[["pwrss"]] / (n - p)))
  res <- list(
    sleepstudy_reml_lme4 = jnum(REMLcrit(mr)),
    sleepstudy_reml_dense_exact = jnum(dr[["REML"]]),
    sleepstudy_ml_lme4 = jnum(deviance(mm)),
    sleepstudy_ml_dense_exact = jnum(dm[["ML"]]),
    sleepstudy_sum_log_w = jnum(dr[["sum_log_w"]]),
    synth_reml_lme4 = jnum(REMLcrit(m_synth)),
    synth_reml_from_pieces_with_minus_sum_log_w = jnum(from_pieces),
    synth_sum_log_w = jnum(ldW),
    includes_minus_sum_log_weights =
      isTRUE(abs(REMLcrit(mr) - dr[["REML"]]) < 1e-6) &&
      isTRUE(abs(deviance(mm) - dm[["ML"]]) < 1e-6) &&
      isTRUE(abs(REMLcrit(m_synth) - from_pieces) < 1e-6 * abs(from_pieces))
  )
  cat(sprintf(paste0(
    "weights check: sleepstudy REML lme4 %.10f dense %.10f (sum log w %.6f)\n",
    "               sleepstudy ML   lme4 %.10f dense %.10f\n",
    "               synth REML lme4 %.10f pieces(-sum log w) %.10f\n",
    "               => lme4 criterion includes -sum(log(w)): %s\n"),
    REMLcrit(mr), dr[["REML"]], dr[["sum_log_w"]], deviance(mm), dm[["ML"]],
    REMLcrit(m_synth), from_pieces, res$includes_minus_sum_log_weights))
  res
}

## --------------------------------------------------------------------------
## main
## --------------------------------------------------------------------------
cat(sprintf("lme4 %s, R %s\n", packageVersion("lme4"), getRversion()))
results <- vector("list", length(cases))
for (i in seq_along(cases)) {
  cs <- cases[[i]]
  res <- fit_case(cs)
  if (cs$name == "synth_weights_reml")
    res$weights_check <- check_weighted_criterion(res$.model)
  res$.model <- NULL
  results[[i]] <- res
  crit <- if (cs$reml) res$reml_criterion else res$deviance
  cat(sprintf("%-42s %-5s crit=%-22s n_evals=%4d  %7.2fs  singular=%s%s\n",
              cs$name, if (cs$reml) "REML" else "ML", crit, res$n_evals,
              as.numeric(res$fit_seconds), res$singular,
              if (length(res$converged_messages) || length(res$fit_messages) ||
                  length(res$fit_warnings))
                paste0("  [", paste(c(res$converged_messages, res$fit_messages,
                                      res$fit_warnings), collapse = " | "), "]")
              else ""))
}

## Write: one top-level field per line; varcorr / ranef / objective_at with
## one record per line (diff-friendly, still compact).
case_json <- function(res) {
  keys <- names(res)
  lines <- vapply(keys, function(k) {
    v <- res[[k]]
    if (k %in% c("varcorr", "ranef", "objective_at")) {
      body <- vapply(v, function(r) as.character(to_json(r)), character(1))
      val <- paste0("[\n      ", paste(body, collapse = ",\n      "), "\n    ]")
    } else if (is.null(v)) {
      val <- "null"
    } else {
      val <- as.character(to_json(v))
    }
    paste0("    ", as.character(to_json(k)), ": ", val)
  }, character(1))
  paste0("  {\n", paste(lines, collapse = ",\n"), "\n  }")
}
txt <- paste0("[\n", paste(vapply(results, case_json, character(1)),
                          collapse = ",\n"), "\n]\n")
writeLines(txt, out_file, sep = "")
invisible(fromJSON(out_file, simplifyVector = FALSE))   # sanity: parses
cat(sprintf("wrote %s (%.2f MB, %d cases)\n", out_file,
            file.size(out_file) / 1e6, length(results)))
