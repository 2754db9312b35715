from recbole_recgpt.model.recgpt import RecGPT

__all__ = ["RecGPT"]
