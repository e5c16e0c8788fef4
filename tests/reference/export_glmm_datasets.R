#!/usr/bin/env Rscript
## Export lme4's GLMM example datasets to CSV test fixtures.
##
## Usage (from the repo root):  Rscript tests/reference/export_glmm_datasets.R
##
## Writes tests/reference/data/<name>.csv with write.csv(row.names = FALSE),
## factors as their labels (same conventions as export_datasets.R).
##
##   cbpp.csv         lme4::cbpp, all columns (herd, incidence, size, period)
##   grouseticks.csv  lme4::grouseticks, columns INDEX, TICKS, BROOD, HEIGHT,
##                    YEAR, LOCATION (cHEIGHT dropped: the formula uses
##                    scale(HEIGHT))
##   VerbAgg.csv      lme4::VerbAgg, columns id, item, Anger, Gender, btype,
##                    situ, r2 -- with r2 recoded to integer 0/1
##                    (1 = "Y", 0 = "N"; in R r2 is a factor with levels N, Y,
##                    and glmer treats the first level as failure, so the
##                    0/1 column gives the identical fit)

suppressPackageStartupMessages(library(lme4))

source(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))),
               "reference_helpers.R"))
out_dir <- file.path(get_script_dir(), "data")
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)

va <- lme4::VerbAgg[, c("id", "item", "Anger", "Gender", "btype", "situ", "r2")]
stopifnot(identical(levels(va$r2), c("N", "Y")))
va$r2 <- as.integer(va$r2 == "Y")

datasets <- list(
  cbpp        = lme4::cbpp,
  grouseticks = lme4::grouseticks[, c("INDEX", "TICKS", "BROOD", "HEIGHT",
                                      "YEAR", "LOCATION")],
  VerbAgg     = va
)

for (nm in names(datasets)) {
  df <- datasets[[nm]]
  for (col in names(df)) {
    if (is.factor(df[[col]])) df[[col]] <- as.character(df[[col]])
  }
  path <- file.path(out_dir, paste0(nm, ".csv"))
  write.csv(df, path, row.names = FALSE)
  cat(sprintf("wrote %-12s %6d rows x %d cols -> %s\n",
              nm, nrow(df), ncol(df), path))
}
