"""Embedded data sets, generated here (seeded) so they are free to redistribute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

READING_TIMES_CSV = Path(__file__).with_name("reading_times.csv")


def make_reading_times(seed: int = 20261124) -> pl.DataFrame:
    """A psycholinguistics-style crossed design: 56 subjects x 32 items.

    Each subject reads each item once, in one of two conditions
    (counterbalanced), and a few trials are lost (missing rt), as in real
    eye-tracking or self-paced reading data. log rt has subject and item
    intercepts, a subject-varying condition effect and word frequency.
    """
    rng = np.random.default_rng(seed)
    n_subjects, n_items = 56, 32
    subject_intercept = rng.normal(0.0, 0.12, n_subjects)
    subject_slope = 0.4 * subject_intercept / 0.12 * 0.03 + rng.normal(0.0, 0.03, n_subjects)
    item_intercept = rng.normal(0.0, 0.08, n_items)
    frequency = np.round(rng.normal(0.0, 1.0, n_items), 3)
    subject = np.repeat(np.arange(n_subjects), n_items)
    item = np.tile(np.arange(n_items), n_subjects)
    condition = (subject + item) % 2
    log_rt = (
        6.0
        + (0.06 + subject_slope[subject]) * condition
        - 0.04 * frequency[item]
        + subject_intercept[subject]
        + item_intercept[item]
        + rng.normal(0.0, 0.25, subject.size)
    )
    rt = np.round(np.exp(log_rt), 1)
    rt[rng.random(subject.size) < 0.02] = np.nan
    return pl.DataFrame(
        {
            "subject": [f"s{k + 1:02d}" for k in subject],
            "item": [f"i{k + 1:02d}" for k in item],
            "condition": np.where(condition == 1, "violation", "control"),
            "frequency": frequency[item],
            "rt": rt,
        }
    ).with_columns(pl.col("rt").fill_nan(None))


def make_lexical_decisions(seed: int = 20261129) -> pl.DataFrame:
    """A binary-outcome crossed design: 60 subjects x 40 words, lexical decision accuracy.

    Each subject judges each word once; ``correct`` is 1 for a right answer.
    The log-odds of a right answer have subject and word intercepts, a word
    frequency effect and a subject-varying effect of the word's ``length``.
    Generated on the fly (seeded), so no file ships with it.
    """
    rng = np.random.default_rng(seed)
    n_subjects, n_words = 60, 40
    subject_intercept = rng.normal(0.0, 0.8, n_subjects)
    subject_length = rng.normal(0.0, 0.15, n_subjects)
    word_intercept = rng.normal(0.0, 0.5, n_words)
    frequency = np.round(rng.normal(0.0, 1.0, n_words), 3)
    length = rng.integers(3, 10, n_words)
    subject = np.repeat(np.arange(n_subjects), n_words)
    word = np.tile(np.arange(n_words), n_subjects)
    centred_length = length[word] - 6.0
    log_odds = (
        1.6
        + 0.5 * frequency[word]
        + (-0.15 + subject_length[subject]) * centred_length
        + subject_intercept[subject]
        + word_intercept[word]
    )
    correct = (rng.random(subject.size) < 1.0 / (1.0 + np.exp(-log_odds))).astype(np.int64)
    return pl.DataFrame(
        {
            "subject": [f"s{k + 1:02d}" for k in subject],
            "word": [f"w{k + 1:02d}" for k in word],
            "frequency": frequency[word],
            "length": length[word],
            "correct": correct,
        }
    )


def load_reading_times() -> pl.DataFrame:
    """The embedded reading-time data (1,792 trials; rt is missing for a few)."""
    return pl.read_csv(READING_TIMES_CSV)


def write_reading_times() -> None:
    """Regenerate the embedded CSV from the seeded generator."""
    make_reading_times().write_csv(READING_TIMES_CSV)


