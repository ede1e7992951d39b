"""Quickstart: the whole workbench from Python, no config files.

digits (embedded) -> 3 experts -> DATM at 1 image per class -> evaluation beside a random real subset.
Runs in about a minute on 2 CPU cores:  .venv/bin/python examples/quickstart.py
"""

import torch

import distill


def main(iterations: int = 60, eval_epochs: int = 150, runs: int = 2) -> list[dict]:
    torch.manual_seed(0)
    data = distill.prepare_data(distill.DatasetSpec("digits", val_per_class=10))  # train / val / test, normalised
    model = distill.ModelSpec("convnet", {"width": 32, "depth": 2})  # a small ConvNet for 8x8 images

    # 1. Experts: networks trained on the real data, every epoch's parameters kept (in memory here;
    #    distill.build_buffer writes them to a resumable folder instead).
    recipe = distill.ExpertRecipe(epochs=8, batch_size=32)
    experts = distill.train_experts(data, model, recipe, num_experts=3, seed=0)

    # 2. DATM: learn 1 image per class, its soft labels and the student lr so that 10 student steps
    #    from expert epoch t land near expert epoch t + 2, with t drawn from a window that grows
    #    from [0, 2) to [0, 5). "flat" skips the one-off compilation of the default engine.
    settings = distill.DistillSettings(
        ipc=1,
        iterations=iterations,
        syn_steps=10,
        expert_epochs=2,
        min_start_epoch=0,
        current_max_start_epoch=2,
        max_start_epoch=5,
        expansion_end_iteration=iterations // 2,
        lr_img=100.0,
        lr_lr=1e-5,
        lr_y=2.0,
        eval_every=iterations // 3,
        eval_epochs=eval_epochs,
        engine="flat",
    )
    protocol = distill.Protocol(epochs=eval_epochs)
    result = distill.distill_set(data, experts, model, settings, seed=0, protocol=protocol)
    print(f"picked by {result.selection} at iteration {result.best['iteration']}; {result.skipped} updates skipped")

    # 3. Evaluation: fresh networks trained on the 10 images, and on 10 random real ones.
    records = distill.evaluate(
        data,
        result.selected,
        protocol=protocol,
        model=model,
        runs=runs,
        seed=0,
        baselines=("random",),
        label_modes=("soft",),
        method="datm",
    )
    for r in records:
        print(f"{r['set']:9s} ({r['labels']} labels): {100 * r['mean']:.1f} ± {100 * r['std']:.1f} % test accuracy")
    print(distill.results_table(records, "digits, IPC 1"))
    return records


if __name__ == "__main__":
    main()
