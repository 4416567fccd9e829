"""Write docs/models.md, the compatibility table, from the results of the model sweep.

The sweep tests append one JSON line per model to ``$INTERP_ZOO_RESULTS/{torch,keras,flax}.jsonl``
(``tests/test_zoo_torch.py`` in the zoo venv, ``tests/test_zoo_keras.py`` and
``tests/test_zoo_flax.py`` in the main venv). ``make models-table`` runs them all with that
variable set, slow half included, then this script; by hand:

    rm -rf .zoo-results
    INTERP_TEST_ZOO=1 INTERP_ZOO_RESULTS=.zoo-results .venv-zoo/bin/python -m pytest -q \\
        tests/test_zoo_torch.py
    INTERP_ZOO_RESULTS=.zoo-results .venv/bin/python -m pytest -q tests/test_zoo_keras.py \\
        tests/test_zoo_flax.py
    .venv/bin/python scripts/make_models_table.py .zoo-results   # writes docs/models.md

The table lists every model the sweep ran; a model whose sweep test was deselected (``-m "not
slow"``) is missing from it, so generate the page from a full run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SOURCES = ("torch", "keras", "flax")
TITLES = {"torchvision": "torchvision", "timm": "timm", "transformers": "Hugging Face transformers",
          "keras.applications": "keras.applications", "flax.nnx": "Flax NNX"}

#: Where the sweep runs, and why the slow half stays out of CI (figures measured on the shared
#: 2-core development machine, load average about 7, so on the slow side).
CI_NOTE = """\
**In CI** (`.ci/run`: `make test`, `make test-zoo`, `make docs`) the not-slow half runs on every
change: 33 of the 61 torch models, with the detection, segmentation and wrapper tests, in the
zoo venv (`make test-zoo`), and 13 of the 40 keras.applications models and both Flax models in
`make test`. The half marked `slow` runs only in `make models-table`, which regenerates this
page. Measured: building the zoo venv takes 5.1 min (2.9 GiB of wheels, 6.1 GB installed) and
`make test-zoo` 3.5 to 4.8 min wall (2.0 to 2.4 min CPU), which takes CI from about 10 to about
20 minutes; the slow half would add about 15 minutes more (torch 3.5, keras 11.6 in the run
below), past the 30-minute limit, so it is not run in CI."""

#: The per-family guide: (family, a good layer, why).
LAYER_GUIDE = [
    ('ResNet, ResNeXt, Wide ResNet, RegNet',
     '`layer4` (torchvision), `layer4` / `s4` / `stages.3` (timm)',
     'the last stage: coarse but class-specific; `layer3` for finer maps'),
    ('VGG, AlexNet',
     '`features` (the last ReLU before the last pool at small inputs)',
     'the adaptive pool after it only repeats values'),
    ('DenseNet',
     '`features` (torchvision), `features.norm5`',
     'the final norm of the last dense block'),
    ('MobileNet, EfficientNet, MNASNet, ShuffleNet',
     '`features` / `conv5` / `conv_head`',
     'the 1x1 expansion before pooling'),
    ('ConvNeXt',
     '`features` / `stages.3`',
     "channels-first stage output; the blocks' inner LayerNorm works too (channels-last, "
     "moved automatically)"),
    ('ViT, DeiT, BEiT, DINOv2',
     '`blocks[-1].norm1` (timm), `encoder.layers.encoder_layer_11.ln_1` (torchvision), '
     '`vit.layers[-1].layernorm_before` (HF)',
     'after the last block only the class token reaches the head; its first norm still sees '
     'every patch'),
    ('Swin',
     '`layers[-1].blocks[-1].norm1` (timm), `features[-1][-1].norm1` (torchvision), '
     '`swin.layernorm` (HF)',
     'channels-last `(N, H, W, C)` in timm/torchvision, tokens in HF: both become grids'),
    ('LeViT, EfficientFormer, MaxViT, MobileViT, TinyViT, PiT',
     'the last stage with more than one position',
     'small inputs leave the last stage 1x1: use the previous one'),
    ('CaiT',
     '`blocks_token_only[-1].norm1`',
     'the class-attention blocks read the patch tokens'),
    ('MLP-Mixer',
     '`blocks[-1].norm1` or `norm`',
     'tokens without class token, mean-pooled'),
    ('keras.applications',
     'the last activation of the last stage (`conv5_block3_out`, `top_activation`, `out_relu`)',
     'the default picks it'),
    ('Detection (torchvision)',
     '`backbone.body.layer4` or `backbone.fpn.layer_blocks.0`',
     'see [detection.md](detection.md); the FPN dict output is not a tensor'),
    ('Segmentation',
     '`backbone.layer4` (DeepLabV3, FCN), `decode_head.linear_fuse` (Segformer)',
     'see [segmentation.md](segmentation.md)'),
]

GUIDE = """\
## Choosing the layer

`layer=None` runs the model once and takes the last layer whose output is a grid over the
input (more than one position, the input's number of spatial axes) and whose grid still reaches
the score (one top-1 gradient pass on the first sample checks the last few). Token layers are
reshaped to their grid on their own: the grid comes from the input size, and 0, 1 (class), 2
(class + distillation), 4 or 5 (class + 4 registers) leading tokens are dropped. For a token
model the pick moves to the last block's first norm. `Explanation.layers` and the CLI's
`results.jsonl` name the layer used. Pass `layer=` when you want another one; per family:

{table}

Layers the default never picks: a layer that runs twice in one pass (its gradient is not one
layer's), outputs whose first axis is not the batch (RoI features, MobileViT's unfolded
patches), adaptive pooling, grids whose aspect does not follow the input's, and layers whose
grid does not reach the score. When no layer qualifies, the error names the three most likely
candidates and why each was passed over.
"""


def load(folder: Path) -> list[dict]:
    """Every result line of the sweep, the last one per model (reruns replace earlier runs)."""
    rows: dict[str, dict] = {}
    for source in SOURCES:
        path = folder / f"{source}.jsonl"
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    rows[row["case"]] = row
    return list(rows.values())


def _status(row: dict) -> str:
    if row["default_ok"] and row["named_ok"]:
        return "pass"
    failed = [name for name, ok in (("default", row["default_ok"]), ("named", row["named_ok"]))
              if not ok]
    return "FAIL (" + ", ".join(failed) + ")"


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if text else ""


def render(rows: list[dict]) -> str:
    n = len(rows)
    default_ok = sum(r["default_ok"] for r in rows)
    named_ok = sum(r["named_ok"] for r in rows)
    seconds = sum(r.get("seconds", 0.0) for r in rows)
    cpu = sum(r.get("cpu_seconds", 0.0) for r in rows)
    lines = [
        "# Models: compatibility table",
        "",
        "Generated by `scripts/make_models_table.py` from the model sweep (`tests/test_zoo_*.py`):",
        "every model below is built with random weights and a small input (nothing is",
        "downloaded), explained with Grad-CAM at the default layer (`layer=None`) and at a named",
        "layer, and each map is checked against a Grad-CAM computed by hand with the framework's",
        "autograd at the same layer (raw map to 2e-3 of its scale; maps to 2e-3, more where",
        "min-max scaling magnifies round-off). Where ReLU leaves nothing of a random-weight map,",
        "the comparison is made without ReLU, so every model is checked on an informative map.",
        "",
        f"**{n} models; default layer: {default_ok}/{n} pass "
        f"({100.0 * default_ok / max(n, 1):.1f}%); named layer: {named_ok}/{n} pass "
        f"({100.0 * named_ok / max(n, 1):.1f}%).** Time in this run: {seconds / 60:.1f} min "
        f"wall, {cpu / 60:.1f} min CPU (model building, both layers, the references).",
        "",
        CI_NOTE,
        "",
        "Token reshape: how the default layer's output became a grid (`tokens: P prefix + HxW`:",
        "P leading tokens dropped; `channels-last`: an `(N, H, W, C)` output in torch); empty",
        "where the layer already was a channels-first grid.",
        "",
    ]
    order = ["torchvision", "timm", "transformers", "keras.applications", "flax.nnx"]
    for source in sorted({r["source"] for r in rows}, key=lambda s: (s not in order,
                                                                      order.index(s)
                                                                      if s in order else 0, s)):
        chosen = [r for r in rows if r["source"] == source]
        lines += [f"## {TITLES.get(source, source)} ({len(chosen)} models)", "",
                  "| Model | Family | Default layer | Token reshape | Named layer | Status |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in sorted(chosen, key=lambda r: (r["family"], r["case"])):
            name = r["case"].split("/", 1)[1]
            lines.append(f"| {name} | {r['family']} | `{_cell(r['default_layer'])}` | "
                         f"{_cell(r.get('reshape', ''))} | `{_cell(r['named_layer'])}` | "
                         f"{_status(r)} |")
        lines.append("")
    failures = [r for r in rows if not (r["default_ok"] and r["named_ok"])]
    lines += ["## Failures", ""]
    if failures:
        lines += [f"- `{r['case']}`: {r['error'] or 'maps differ'}" for r in failures]
    else:
        lines.append("None in this run.")
    table = ["| Family | Good layer (torch names unless said) | Why |", "| --- | --- | --- |"]
    table += [f"| {family} | {layer} | {why} |" for family, layer, why in LAYER_GUIDE]
    lines += ["", GUIDE.format(table="\n".join(table))]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the INTERP_ZOO_RESULTS folder")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent.parent / "docs" / "models.md")
    args = parser.parse_args(argv)
    rows = load(args.results)
    if not rows:
        parser.error(f"no sweep results in {args.results} (run the sweep tests with "
                     "INTERP_ZOO_RESULTS set)")
    args.out.write_text(render(rows), encoding="utf-8")
    print(f"wrote {args.out} ({len(rows)} models)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
