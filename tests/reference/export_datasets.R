#!/usr/bin/env Rscript
## Export lme4's example datasets to CSV test fixtures.
##
## Usage (from the repo root):  Rscript tests/reference/export_datasets.R
##
## Writes tests/reference/data/<name>.csv with write.csv(row.names = FALSE).
## Factors are written as their labels (all values quoted strings in the CSV),
## so e.g. sleepstudy$Subject "308", InstEval$service "0"/"1" stay labels.
## Note: the *level order* of factors is not preserved by CSV; readers should
## treat these columns as strings (make_reference.R sorts levels, which is the
## same as R's default factor() on character data).

suppressPackageStartupMessages(library(lme4))

source(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))),
               "reference_helpers.R"))
out_dir <- file.path(get_script_dir(), "data")
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)

datasets <- list(
  sleepstudy = lme4::sleepstudy,
  Penicillin = lme4::Penicillin,
  Pastes     = lme4::Pastes,
  Dyestuff   = lme4::Dyestuff,
  Dyestuff2  = lme4::Dyestuff2,
  InstEval   = lme4::InstEval[, c("s", "d", "studage", "lectage",
                                  "service", "dept", "y")]
)

for (nm in names(datasets)) {
  df <- datasets[[nm]]
  ## factors (incl. ordered) -> their labels
  for (col in names(df)) {
    if (is.factor(df[[col]])) df[[col]] <- as.character(df[[col]])
  }
  path <- file.path(out_dir, paste0(nm, ".csv"))
  write.csv(df, path, row.names = FALSE)
  cat(sprintf("wrote %-12s %6d rows x %d cols -> %s\n",
              nm, nrow(df), ncol(df), path))
}
