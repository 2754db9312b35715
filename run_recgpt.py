"""Train and evaluate RecGPT (or a RecBole baseline), or recommend from a saved checkpoint:
``python run_recgpt.py --help``, ``python run_recgpt.py recommend --help``."""

from recbole_recgpt.cli import main

if __name__ == "__main__":
    main()
