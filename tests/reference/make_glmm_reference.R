#!/usr/bin/env Rscript
## Fit reference generalized linear mixed models with lme4::glmer and write
## tests/reference/glmm_reference.json for the Python test-suite.
##
## Usage (from the repo root):
##   Rscript tests/reference/export_glmm_datasets.R  # cbpp, grouseticks, VerbAgg -> data/*.csv
##   python  tests/reference/make_glmm_synthetic.py  # synthetic data -> data/glmm_*.csv
##   Rscript tests/reference/make_glmm_reference.R   # fits -> glmm_reference.json
##
## Conventions are those of make_reference.R (the LMM harness):
##  * grouping / categorical columns are read as character and made into
##    factors with levels in C-locale (byte) order (sort(method = "radix")),
##    which is Python's sorted() order.  For the fixed-effect factors used here
##    (cbpp$period, grouseticks$YEAR, VerbAgg$Gender/btype/situ) this is also
##    the level order of the original R data, so the contrasts (reference
##    levels) are the same as in lme4's own examples.
##  * numbers are written with the shortest of %.15g / %.16g / %.17g that
##    reads back to the identical double.
##  * all fits use glmer's default controls (glmerControl(): optimizer
##    c("bobyqa", "Nelder_Mead"), nAGQ0initStep = TRUE, default tolerances).
##
## What glmer's numbers mean (checked below, stored per case)
## ----------------------------------------------------------
##  * devfun <- glmer(..., devFunOnly = TRUE) with nAGQ >= 1 is the stage-2
##    objective.  It takes c(theta, beta) and returns, after a PIRLS solve for
##    the conditional modes u at that (theta, beta) (beta held fixed):
##      nAGQ = 1 (Laplace):  aic_family(y, mu, wt) + ldL2 + sum(u^2)
##        where aic_family = family()$aic(...) = -2 * sum(prior-weighted
##        log density of y given mu) (including all constants: binomial
##        coefficient, log(y!) for Poisson; for Gamma the family aic, which
##        plugs in the dispersion dev/sum(wt) and adds 2), and
##        ldL2 = log det(Lambda' Z' W Z Lambda + I).  Its value at the fit is
##        -2 * logLik(m) = m@devcomp$cmp[["dev"]].
##      nAGQ > 1 (AGQ, one scalar term):  the adaptive Gauss-Hermite
##        approximation built from the *deviance residuals*, i.e.
##        -2 log L_AGQ + 2 log L_saturated: it is NOT on the -2 logLik scale;
##        it differs from the true -2 log marginal likelihood by the constant
##        -2 * sum(log density of y at mu = y) (for binomial with cbind that is
##        -2 * sum(dbinom(y, n, y/n, log = TRUE))).  logLik(m) of an AGQ fit is
##        -devfun/2 on this shifted scale.  See "agq_check".
##    With nAGQ = 0, devFunOnly returns the stage-1 objective, a function of
##    theta only (beta is updated inside PIRLS together with u); at the fit it
##    equals -2 * logLik(m) as well.
##  * deviance(m) of a glmer fit is sum(residuals(m, "deviance")^2), the
##    conditional deviance at the conditional modes -- not -2 logLik.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

source(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))),
               "reference_helpers.R"))
ref_dir  <- get_script_dir()
data_dir <- file.path(ref_dir, "data")
out_file <- file.path(ref_dir, "glmm_reference.json")

## --------------------------------------------------------------------------
## data
## --------------------------------------------------------------------------
factor_cols <- list(
  "cbpp.csv"                   = c("herd", "period"),
  "grouseticks.csv"            = c("INDEX", "BROOD", "YEAR", "LOCATION"),
  "VerbAgg.csv"                = c("id", "item", "Gender", "btype", "situ"),
  "glmm_bernoulli_crossed.csv" = c("subject", "item"),
  "glmm_gamma_crossed.csv"     = c("subject", "item"),
  "glmm_poisson_offset.csv"    = c("subject", "item"),
  "glmm_probit_crossed.csv"    = c("subject", "item"),
  "glmm_gaussian_log.csv"      = c("subject", "item"),
  "glmm_inverse_gaussian.csv"  = c("subject", "item")
)

read_data <- function(file) read_reference_data(file, data_dir, factor_cols,
                                                  "export_glmm_datasets.R / make_glmm_synthetic.py")

## --------------------------------------------------------------------------
## cases
## --------------------------------------------------------------------------
case <- function(name, data, formula, family, link, nAGQ = 1L,
                 weights = NULL, offset = NULL)
  list(name = name, data = data, formula = formula, family = family,
       link = link, nAGQ = as.integer(nAGQ), weights = weights, offset = offset)

cbpp_f   <- "cbind(incidence, size - incidence) ~ period + (1 | herd)"
va_f     <- "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)"
xsi_f    <- "y ~ x + (1 | subject) + (1 | item)"

cases <- list(
  case("cbpp_binomial_laplace", "cbpp.csv", cbpp_f, "binomial", "logit", 1),
  case("cbpp_binomial_nagq0",   "cbpp.csv", cbpp_f, "binomial", "logit", 0),
  case("cbpp_binomial_agq9",    "cbpp.csv", cbpp_f, "binomial", "logit", 9),
  case("cbpp_binomial_proportion_weights", "cbpp.csv",
       "incidence/size ~ period + (1 | herd)", "binomial", "logit", 1,
       weights = "size"),
  case("grouseticks_poisson_laplace", "grouseticks.csv",
       "TICKS ~ YEAR + scale(HEIGHT) + (1 | BROOD) + (1 | LOCATION)",
       "poisson", "log", 1),
  case("verbagg_binomial_laplace", "VerbAgg.csv", va_f, "binomial", "logit", 1),
  case("verbagg_binomial_nagq0",   "VerbAgg.csv", va_f, "binomial", "logit", 0),
  case("synth_bernoulli_crossed_laplace", "glmm_bernoulli_crossed.csv", xsi_f,
       "binomial", "logit", 1),
  case("synth_bernoulli_crossed_nagq0",   "glmm_bernoulli_crossed.csv", xsi_f,
       "binomial", "logit", 0),
  case("synth_gamma_log_laplace", "glmm_gamma_crossed.csv", xsi_f,
       "Gamma", "log", 1),
  case("synth_poisson_offset_laplace", "glmm_poisson_offset.csv", xsi_f,
       "poisson", "log", 1, offset = "log_t"),
  case("synth_probit_crossed_laplace", "glmm_probit_crossed.csv", xsi_f,
       "binomial", "probit", 1),
  case("cbpp_cloglog_agq5", "cbpp.csv", cbpp_f, "binomial", "cloglog", 5),
  case("synth_gaussian_log_laplace", "glmm_gaussian_log.csv", xsi_f,
       "gaussian", "log", 1),
  case("synth_inverse_gaussian_log_laplace", "glmm_inverse_gaussian.csv", xsi_f,
       "inverse.gaussian", "log", 1)
)

## --------------------------------------------------------------------------
## JSON helpers: full-precision numbers spliced in verbatim
## --------------------------------------------------------------------------
## fmt_num, jnum, jarr, jstr_arr, na2null, to_json: see reference_helpers.R

## --------------------------------------------------------------------------
## fitting
## --------------------------------------------------------------------------
build_call <- function(cs, dev_fun_only = FALSE, control = NULL) {
  fam <- call(cs$family, link = cs$link)
  args <- list(formula = as.formula(cs$formula), data = quote(d),
               family = fam, nAGQ = cs$nAGQ)
  if (!is.null(cs$weights)) args$weights <- as.name(cs$weights)
  if (!is.null(cs$offset))  args$offset  <- as.name(cs$offset)
  if (dev_fun_only) args$devFunOnly <- TRUE
  if (!is.null(control)) args$control <- control
  as.call(c(quote(glmer), args))
}

## glmer pushed to its optimum: bobyqa for both stages with a small final
## trust radius, and PIRLS to a tighter tolerance.  The default fit (above)
## can stop short on flat directions (Nelder-Mead's stopping rule); this one
## says where the optimum is, for the fixed effects and standard errors.
tight_control <- quote(glmerControl(optimizer = c("bobyqa", "bobyqa"),
                                    optCtrl = list(rhoend = 1e-9, maxfun = 1e5),
                                    tolPwrss = 1e-10))

## eval_collect: see reference_helpers.R

## log density of y at its own mean (the saturated model), prior-weighted;
## -2 * this is the constant between lme4's AGQ deviance and -2 logLik.
saturated_m2ll <- function(m) {
  r <- m@resp
  fam <- family(m)$family
  y <- r$y; wt <- r$weights                 # y: proportion, wt: trials (binomial)
  if (fam == "binomial") {
    n <- wt; k <- round(y * n)
    return(-2 * sum(dbinom(k, n, k / pmax(n, 1), log = TRUE)))
  }
  if (fam == "poisson") return(-2 * sum(wt * dpois(y, y, log = TRUE)))
  NA_real_
}

## exact -2 log marginal likelihood of a single-scalar-term binomial/poisson
## GLMM at the fitted parameters, by adaptive numerical integration per group.
brute_m2ll_scalar <- function(m) {
  th <- getME(m, "theta"); stopifnot(length(th) == 1L)
  fl <- getME(m, "flist"); stopifnot(length(fl) == 1L)
  g <- fl[[1]]
  eta0 <- drop(getME(m, "X") %*% fixef(m)) + getME(m, "offset")
  r <- m@resp; y <- r$y; wt <- r$weights
  fam <- family(m)
  ll <- 0
  for (lv in levels(g)) {
    i <- which(g == lv)
    logf <- function(u) {
      mu <- fam$linkinv(eta0[i] + th * u)
      if (fam$family == "binomial")
        sum(dbinom(round(y[i] * wt[i]), wt[i], mu, log = TRUE))
      else sum(wt[i] * dpois(y[i], mu, log = TRUE))
    }
    ## centre/scale the integrand at its mode for accuracy
    opt <- optimize(function(u) -(logf(u) + dnorm(u, log = TRUE)), c(-20, 20))
    c0 <- -opt$objective
    f <- function(u) vapply(u, function(uu) exp(logf(uu) + dnorm(uu, log = TRUE) - c0), 1)
    val <- integrate(f, -Inf, Inf, rel.tol = 1e-13, abs.tol = 0,
                     subdivisions = 1000L)$value
    ll <- ll + log(val) + c0
  }
  -2 * ll
}

fit_case <- function(cs) {
  d <- read_data(cs$data)
  env <- environment()
  fit <- eval_collect(build_call(cs), env)
  m <- fit$value

  theta <- getME(m, "theta")
  fe <- fixef(m)
  ll <- logLik(m)
  m2ll <- -2 * as.numeric(ll)
  cmp <- m@devcomp$cmp

  ## objective function from devFunOnly = TRUE
  dfo <- eval_collect(build_call(cs, dev_fun_only = TRUE), env)
  devfun <- dfo$value
  if (cs$nAGQ >= 1L) {
    pts <- list(fitted = c(unname(theta), unname(fe)),
                theta_x0.8 = c(unname(theta) * 0.8, unname(fe)))
    arg_kind <- "c(theta, beta)"
  } else {
    pts <- list(fitted = unname(theta), theta_x0.8 = unname(theta) * 0.8)
    arg_kind <- "theta"
  }
  vals <- vapply(pts, function(p) devfun(p), 1)
  refit <- devfun(pts$fitted)               # devfun is stateful: re-check
  objective_at <- lapply(names(pts), function(k)
    list(label = k, args = arg_kind, input = jarr(pts[[k]]),
         value = jnum(vals[[k]])))
  check_msgs <- character(0)
  if (abs(vals[["fitted"]] - m2ll) > 1e-7 * max(1, abs(m2ll)))
    check_msgs <- c(check_msgs, sprintf(
      "devfun(fitted)=%.12g differs from -2 logLik %.12g", vals[["fitted"]], m2ll))
  if (abs(refit - vals[["fitted"]]) > 1e-7 * max(1, abs(refit)))
    check_msgs <- c(check_msgs, sprintf(
      "devfun(fitted) not reproducible after perturbed call: %.12g vs %.12g",
      refit, vals[["fitted"]]))

  ## Laplace pieces at the fit (m@resp / m@pp hold the final PIRLS state)
  u <- getME(m, "u")
  pieces <- list(
    aic_family = jnum(m@resp$aic()),
    ldL2 = jnum(cmp[["ldL2"]]),
    sum_u_sq = jnum(sum(u^2)),
    sum_dev_resid = jnum(sum(m@resp$devResid())),
    saturated_minus_two_loglik = jnum(saturated_m2ll(m)),
    cmp_dev = jnum(cmp[["dev"]])
  )

  se <- sqrt(diag(as.matrix(vcov(m))))
  se_nh <- sqrt(diag(as.matrix(suppressWarnings(vcov(m, use.hessian = FALSE)))))
  derivs <- m@optinfo$derivs              # NULL for nAGQ = 0
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

  res <- list(
    name = cs$name, data = cs$data, formula = cs$formula,
    family = family(m)$family, link = family(m)$link, nAGQ = cs$nAGQ,
    weights = cs$weights, offset = cs$offset,
    nobs = nobs(m),
    ngroups = as.list(setNames(as.integer(ng), names(ng))),
    theta = jarr(theta), theta_names = jstr_arr(names(theta)),
    fixef_names = jstr_arr(names(fe)), fixef = jarr(fe),
    se = jarr(unname(se[names(fe)])),
    se_no_hessian = jarr(unname(se_nh[names(fe)])),
    hessian = if (is.null(derivs$Hessian)) NULL else
      lapply(seq_len(nrow(derivs$Hessian)), function(i) jarr(derivs$Hessian[i, ])),
    gradient = if (is.null(derivs$gradient)) NULL else jarr(derivs$gradient),
    sigma = jnum(sigma(m)),
    loglik = jnum(as.numeric(ll)),
    deviance = jnum(deviance(m)),
    minus_two_loglik = jnum(m2ll),
    aic = jnum(AIC(m)), bic = jnum(BIC(m)),
    df = as.integer(attr(ll, "df")),
    singular = isSingular(m),
    converged_messages = jstr_arr(if (is.null(conv_msgs)) character(0) else conv_msgs),
    optimizer_warnings = jstr_arr(unlist(m@optinfo$warnings)),
    fit_messages = jstr_arr(fit$messages),
    fit_warnings = jstr_arr(fit$warnings),
    optimizer = m@optinfo$optimizer,
    n_evals = as.integer(m@optinfo$feval),
    objective_pieces = pieces,
    varcorr = varcorr,
    ranef = ranef_rows,
    objective_at = objective_at,
    objective_check_messages = jstr_arr(check_msgs),
    fit_seconds = jnum(round(fit$elapsed, 3))
  )
  if (cs$nAGQ >= 1L) {
    tight <- eval_collect(build_call(cs, control = tight_control), env)
    mt <- tight$value
    fet <- fixef(mt)
    res$tight <- list(
      control = "glmerControl(optimizer = c('bobyqa', 'bobyqa'), optCtrl = list(rhoend = 1e-9, maxfun = 1e5), tolPwrss = 1e-10)",
      theta = jarr(getME(mt, "theta")),
      fixef = jarr(fet),
      se = jarr(unname(sqrt(diag(as.matrix(vcov(mt))))[seq_along(fet)])),
      minus_two_loglik = jnum(-2 * as.numeric(logLik(mt))),
      n_evals = as.integer(mt@optinfo$feval),
      messages = jstr_arr(c(mt@optinfo$conv$lme4$messages, tight$warnings))
    )
  }
  if (cs$nAGQ > 1L) {
    exact <- brute_m2ll_scalar(m)
    sat <- saturated_m2ll(m)
    res$agq_check <- list(
      exact_minus_two_loglik = jnum(exact),
      saturated_minus_two_loglik = jnum(sat),
      exact_minus_saturated = jnum(exact - sat),
      lme4_minus_two_loglik = jnum(m2ll),
      note = paste("exact = -2 log marginal likelihood at the fitted (theta, beta)",
                   "by stats::integrate per group; lme4's AGQ value ~= exact - saturated")
    )
  }
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
  results[[i]] <- res
  notes <- c(res$converged_messages, res$fit_messages, res$fit_warnings,
             res$objective_check_messages)
  cat(sprintf("%-36s nAGQ=%d -2ll=%-20s dev=%-20s %6.2fs%s\n",
              cs$name, cs$nAGQ, res$minus_two_loglik, res$deviance,
              as.numeric(res$fit_seconds),
              if (length(notes)) paste0("  [", paste(notes, collapse = " | "), "]")
              else ""))
  if (!is.null(res$agq_check))
    cat(sprintf("    agq_check: exact %s  saturated %s  exact-saturated %s  lme4 %s\n",
                res$agq_check$exact_minus_two_loglik,
                res$agq_check$saturated_minus_two_loglik,
                res$agq_check$exact_minus_saturated,
                res$agq_check$lme4_minus_two_loglik))
}

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
invisible(fromJSON(out_file, simplifyVector = FALSE))
cat(sprintf("wrote %s (%.2f MB, %d cases)\n", out_file,
            file.size(out_file) / 1e6, length(results)))
