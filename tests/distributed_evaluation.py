"""Evaluate a saved checkpoint, alone or in each process of a torchrun group (a test helper).

    python tests/distributed_evaluation.py CHECKPOINT OUT.json
    torchrun --standalone --nproc-per-node=2 tests/distributed_evaluation.py CHECKPOINT OUT.json

Process 0 writes the validation and test metrics, the number of processes, and how many
test users each process scored.
"""

import json
import sys

from recbole_recgpt import distributed
from recbole_recgpt.quick_start import load_data_and_model, trainer_class


def main(checkpoint, out):
    config, model, _, _, valid_data, test_data = load_data_and_model(checkpoint)
    trainer = trainer_class(config)(config, model)
    valid = trainer.evaluate(valid_data, load_best_model=False)
    full_sort_top_k, scored = model.full_sort_top_k, []

    def counting(interaction, *args):
        top = full_sort_top_k(interaction, *args)
        scored.append(len(top))
        return top

    model.full_sort_top_k = counting
    test = trainer.evaluate(test_data, load_best_model=False)
    users_scored = distributed.all_gather_object(sum(scored))
    if distributed.is_main():
        result = {"world_size": distributed.world_size(), "valid": dict(valid), "test": dict(test),
                  "users": len(test_data.dataset), "users_scored": users_scored}
        with open(out, "w") as file:
            json.dump(result, file)
    distributed.finish()


if __name__ == "__main__":
    main(*sys.argv[1:])
