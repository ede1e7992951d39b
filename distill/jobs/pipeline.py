"""distill-pipeline: experts, distillation at each IPC, evaluation.
The command only; the work is `distill.stages.pipeline.run_pipeline`."""

from distill.cli import command
from distill.stages.pipeline import run_pipeline

main = command(run_pipeline, "distill-pipeline")


if __name__ == "__main__":
    main()
