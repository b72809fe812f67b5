"""Datasets for the training recipes: builders (emoji, scenes) and the loaders every recipe uses.

Builders write img2img-turbo's layouts (paired: train_A/, train_B/, train_prompts.json, test_*;
unpaired: train_A/, train_B/, fixed_prompt_a.txt, fixed_prompt_b.txt, test_*) plus a captioned
image folder (Hugging Face imagefolder: metadata.jsonl per split). `layouts` reads them back and
refuses bad input with a `DatasetError` naming the file or field.
"""

from training.data.layouts import (
    CaptionedDataset,
    DatasetError,
    PairedDataset,
    UnpairedDataset,
    check_resolution,
    load_captioned,
    load_paired,
    load_unpaired,
)

__all__ = [
    "CaptionedDataset",
    "DatasetError",
    "PairedDataset",
    "UnpairedDataset",
    "check_resolution",
    "load_captioned",
    "load_paired",
    "load_unpaired",
]
