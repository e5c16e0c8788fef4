## Helpers shared by the reference scripts in this folder (sourced, not run):
## locating the folder, reading the CSVs with sorted factor levels, writing
## full-precision JSON, and evaluating a fit while collecting its messages.

get_script_dir <- function() {
  args <- commandArgs(trailingOnly = FALSE)
  f <- sub("^--file=", "", args[grep("^--file=", args)])
  if (length(f) == 1L) return(dirname(normalizePath(f)))
  if (dir.exists("tests/reference")) return(normalizePath("tests/reference"))
  normalizePath(".")
}

## Read data/<file>, turning `factor_cols[[file]]` into factors whose levels
## are sorted in byte order (as Python's sorted()); cached per file.
.data_cache <- new.env()
read_reference_data <- function(file, data_dir, factor_cols, hint) {
  if (!is.null(.data_cache[[file]])) return(.data_cache[[file]])
  fcols <- factor_cols[[file]]
  path <- file.path(data_dir, file)
  if (!file.exists(path)) stop("missing data file ", path, " (run ", hint, ")")
  hdr <- names(read.csv(path, nrows = 1, check.names = FALSE))
  cc <- ifelse(hdr %in% fcols, "character", NA)
  d <- read.csv(path, colClasses = cc, check.names = FALSE,
                stringsAsFactors = FALSE)
  for (col in fcols) {
    d[[col]] <- factor(d[[col]], levels = sort(unique(d[[col]]), method = "radix"))
  }
  .data_cache[[file]] <- d
  d
}

## JSON numbers: jsonlite stops at 15 significant digits, so each number is
## written with the shortest of %.15g / %.16g / %.17g that reads back exactly.
fmt_num <- function(x) {
  x <- as.numeric(x)
  vapply(x, function(v) {
    if (is.na(v)) return("null")
    if (!is.finite(v)) stop("non-finite number in output")
    for (d in 15:17) {
      s <- sprintf(paste0("%.", d, "g"), v)
      if (as.numeric(s) == v) break
    }
    s
  }, character(1), USE.NAMES = FALSE)
}
jnum <- function(x) {                       # scalar (NULL / NA -> null)
  if (is.null(x) || length(x) == 0L) return(NULL)
  stopifnot(length(x) == 1L)
  structure(fmt_num(x), class = "json")
}
jarr <- function(x)                         # always a JSON array
  structure(paste0("[", paste(fmt_num(x), collapse = ","), "]"), class = "json")
jstr_arr <- function(x) I(as.character(x))  # always a JSON array of strings
na2null <- function(x) if (length(x) == 0L || is.na(x)) NULL else as.character(x)

to_json <- function(x) jsonlite::toJSON(x, auto_unbox = TRUE, json_verbatim = TRUE,
                                        null = "null", na = "null")

## Evaluate, collecting (and muffling) messages and warnings, and timing it.
eval_collect <- function(expr_call, env) {
  msgs <- character(0); warns <- character(0)
  t <- system.time(
    val <- withCallingHandlers(eval(expr_call, env),
      message = function(m) { msgs <<- c(msgs, trimws(conditionMessage(m)))
                              invokeRestart("muffleMessage") },
      warning = function(w) { warns <<- c(warns, conditionMessage(w))
                              invokeRestart("muffleWarning") })
  )
  list(value = val, messages = msgs, warnings = warns,
       elapsed = unname(t[["elapsed"]]))
}
