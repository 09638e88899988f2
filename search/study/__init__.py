"""The Optuna study: storage, candidates, one trial end to end, the search runner and its workers."""
