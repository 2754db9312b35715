"""Train and evaluate RecGPT (or a RecBole baseline): ``python run_recgpt.py --help``."""

from recbole_recgpt.cli import run_main

if __name__ == "__main__":
    run_main()
