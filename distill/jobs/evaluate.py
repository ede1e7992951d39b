"""distill-eval: evaluate a set beside the baselines; records and tables.
The command only; the work is `distill.stages.evaluate.run_evaluate`."""

from distill.cli import command
from distill.stages.evaluate import run_evaluate

main = command(run_evaluate, "distill-eval")


if __name__ == "__main__":
    main()
