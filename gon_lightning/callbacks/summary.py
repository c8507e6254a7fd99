"""The model summary printed when training starts, without rows that say nothing."""

from __future__ import annotations

from typing import Any

from pytorch_lightning.callbacks import RichModelSummary
from pytorch_lightning.utilities.model_summary.model_summary import get_formatted_model_size, get_human_readable_count


class CompactModelSummary(RichModelSummary):
    """Lightning's rich model summary, less what reads as a fact but is not one: submodules without parameters
    (the metric collections) and the FLOPs column and total when no FLOPs were counted (Lightning counts them
    only in a forward pass of `example_input_array`; the GON family has no plain forward to run)."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        from rich import get_console
        from rich.table import Table

        columns = dict(summary_data)
        if not total_flops:
            columns.pop("FLOPs", None)
        params = list(columns).index("Params")
        rows = [row for row in zip(*columns.values(), strict=True) if row[params].strip() != "0"]
        if " " in columns:  # the row numbers, renumbered
            rows = [(str(i), *row[1:]) for i, row in enumerate(rows)]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name in columns:
            numeric = name in ("Params", "Params per Device", "FLOPs", "In sizes", "Out sizes")
            table.add_column(name, justify="right" if numeric else "left", style="dim" if name == " " else None)
        for row in rows:
            table.add_row(*row)
        totals = {
            "Trainable params": get_human_readable_count(trainable_parameters),
            "Non-trainable params": get_human_readable_count(total_parameters - trainable_parameters).strip(),
            "Total params": get_human_readable_count(total_parameters),
            "Total estimated model params size (MB)": get_formatted_model_size(model_size),
            "Modules in train mode": total_training_modes["train"],
            "Modules in eval mode": total_training_modes["eval"],
        }
        if total_flops:
            totals["Total FLOPs"] = get_human_readable_count(total_flops)
        console = get_console()
        console.print(table)
        for name, value in totals.items():
            console.print(f"[bold]{name}[/]: {value}")
