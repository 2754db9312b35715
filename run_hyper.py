"""Hyper-parameter search with RecBole's HyperTuning: ``python run_hyper.py --help``."""

from recbole_recgpt.cli import hyper_main

if __name__ == "__main__":
    hyper_main()
