"""``--tool=hyperopt``: RecBole's ``HyperTuning`` (exhaustive, random or bayes), resumable.

Trials run one after another in this process. The search is made resumable by two things:
hyperopt draws its suggestions from a generator seeded with the run's ``seed``, so the same
command proposes the same combinations in the same order; and a combination that the
record already holds is answered from the record instead of being trained again. A rerun
therefore replays the finished trials in no time (the bayes search sees the same losses and
so continues the same way) and trains only what is left.
"""

import sys

import numpy as np
from recbole.trainer import HyperTuning

from recbole_recgpt.hyper.space import hyperopt_space
from recbole_recgpt.hyper.trial import OK


class ResumableHyperTuning(HyperTuning):
    """RecBole's ``HyperTuning`` whose trials go through a :class:`SearchRecord`.

    ``run_trial(params) -> row`` trains one combination; ``max_evals`` also caps the
    exhaustive search (RecBole sets it to the grid size).
    """

    def __init__(self, space, record, run_trial, bigger, algo, max_evals, early_stop, seed):
        super().__init__(
            objective_function=None, space=hyperopt_space(space), algo=algo, max_evals=max_evals, early_stop=early_stop
        )
        if algo == "exhaustive":
            self.max_evals = min(self.max_evals, max_evals)
        self.record, self.run_trial, self.bigger, self.seed = record, run_trial, bigger, seed
        self.parameters = {parameter.name: parameter for parameter in space}

    def trial(self, params):
        import hyperopt

        params = {name: self.parameters[name].value(value) for name, value in params.items()}
        row = self.record.finished(params) or self.record.add(self.run_trial(params))
        if row["status"] != OK:
            # hyperopt skips failed trials; its early-stopping rule still reads a loss, and a
            # finite one (inf - inf is nan, which would never count as progress again).
            return {"status": hyperopt.STATUS_FAIL, "loss": sys.float_info.max}
        score = row["best_valid_score"]
        return {"status": hyperopt.STATUS_OK, "loss": -score if self.bigger else score}

    def run(self):
        from hyperopt import fmin
        from hyperopt.exceptions import AllTrialsFailed

        if self.max_evals < 1:
            return
        try:
            fmin(
                self.trial,
                self.space,
                algo=self.algo,
                max_evals=self.max_evals,
                early_stop_fn=self.early_stop_fn,
                rstate=np.random.RandomState(self.seed),
                return_argmin=False,
                show_progressbar=False,
            )
        except AllTrialsFailed:
            pass  # every trial failed: the record says why, and the search has no best
