"""Encoder throughput against ``torch.nn.TransformerEncoder`` of the same size, in the same run.

    python -m benchmarks.encoder_throughput [--users 8192] [--batch 256] [--repeats 3] [--device auto]

Needs only torch, safetensors, pyarrow and numpy (no Spark, no Delta), so it runs from the source tree on
a GPU machine too. Inputs are synthetic rows shaped like the demo's sequences
(``benchmarks.synthetic_sequences``), tensorised once and cut into batches of ``--batch`` users padded to
each batch's longest sequence (the same batches for every model).

* **click encoder vs reference**: duet's ``ClickEncoder`` (pre-norm blocks on
  ``scaled_dot_product_attention``) against the same tokens, the same number of layers, width, heads and
  feed-forward size in ``torch.nn.TransformerEncoder`` (``norm_first=True``, GELU, no dropout) with a
  masked mean, both with the same click objective. Training: forward, backward and an AdamW step;
  inference: forward in ``inference_mode``. The ratio is ours / reference; the goal is >= 1.
  ``nn.TransformerEncoder``'s inference fast path (nested tensors that skip padding) does not apply to
  pre-norm layers, so a post-norm reference is measured too, as the fastest the library offers.
* **variants**: training and inference throughput of the whole ``duet``, ``shared`` and ``click_only``
  models (no reference exists for a whole model).
* On CUDA, with ``--bf16`` (default on CUDA): bf16 autocast, and achieved TFLOP/s and MFU from the
  counted FLOPs (``torch.utils.flop_counter``) over the device's peak (``--peak-tflops``).

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time
import warnings
from dataclasses import replace

import torch
from torch import nn

from benchmarks.synthetic_sequences import synthetic_rows, synthetic_targets
from encoders.batch import UserBatch, tensorize, tensorize_targets
from encoders.click_encoder import ClickEncoder
from encoders.config import ModelConfig, ObjectiveConfig
from encoders.objectives import AdvertiserRetrieval
from encoders.tokens import ClickTokens, Vocabulary
from encoders.train import autocast, select_device
from encoders.variants import UserModel, count_parameters


class ReferenceClickEncoder(nn.Module):
    """The same click tokens through ``torch.nn.TransformerEncoder``, masked mean, projection."""

    def __init__(self, cfg: ModelConfig, vocab: Vocabulary, layers: int, out_dim: int,
                 norm_first: bool = True) -> None:
        super().__init__()
        self.tokens = ClickTokens(cfg, vocab)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, cfg.ffn_mult * cfg.dim, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(cfg.dim),
                                             enable_nested_tensor=True)
        self.proj = nn.Linear(cfg.dim, out_dim)

    def forward(self, batch: UserBatch) -> torch.Tensor:
        x, mask = self.tokens(batch).with_summary()
        x = self.encoder(x, src_key_padding_mask=~mask)
        if x.is_nested:
            x = x.to_padded_tensor(0.0, (mask.shape[0], mask.shape[1], x.size(-1)))
        w = mask.to(x.dtype)[..., None]
        return self.proj((x * w).sum(1) / w.sum(1))


class WithClickHead(nn.Module):
    """An encoder plus the click retrieval objective (what pre-training optimises for clicks)."""

    def __init__(self, encoder: nn.Module, vocab: Vocabulary, out_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = AdvertiserRetrieval(out_dim, vocab.advertiser, temperature=0.1)

    def embed(self, batch: UserBatch) -> torch.Tensor:
        out = self.encoder(batch)
        return out.embedding if hasattr(out, "embedding") else out

    def loss(self, batch: UserBatch, targets) -> torch.Tensor:
        return self.head.loss(self.embed(batch), targets.click_advertisers)


def _batches(users: int, batch_size: int, cfg: ModelConfig, device: torch.device) -> list[tuple]:
    rows = synthetic_rows(users, seed=11)
    targets = synthetic_targets(users, seed=11)
    for field in targets.schema:
        rows = rows.append_column(field, targets.column(field.name))
    out = []
    for start in range(0, users, batch_size):
        part = rows.slice(start, batch_size)
        out.append((tensorize(part, cfg).to(device), tensorize_targets(part, cfg, 32).to(device)))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(step, batches, device: torch.device, repeats: int) -> float:
    """Best sequences/s over ``repeats`` passes (after one warm-up pass)."""
    for inputs, targets in batches[:2]:
        step(inputs, targets)
    _sync(device)
    best = 0.0
    n = sum(len(b[0]) for b in batches)
    for _ in range(repeats):
        started = time.perf_counter()
        for inputs, targets in batches:
            step(inputs, targets)
        _sync(device)
        best = max(best, n / (time.perf_counter() - started))
    return best


def _train_step(model: nn.Module, loss_fn, device: torch.device, bf16: bool):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type in ("cpu", "cuda"))

    def step(inputs, targets):
        with autocast(device, bf16):
            loss = loss_fn(inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _infer_step(embed, device: torch.device, bf16: bool):
    @torch.inference_mode()
    def step(inputs, targets):
        with autocast(device, bf16):
            embed(inputs)

    return step


def _flops(fn, batch) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn(*batch)
    return counter.get_total_flops()


def run(users: int, batch_size: int, repeats: int, device_name: str, bf16: bool | None,
        peak_tflops: float | None, threads: int) -> dict:
    device = select_device(device_name)
    if threads:
        torch.set_num_threads(threads)
    bf16 = device.type == "cuda" if bf16 is None else bf16
    cfg = ModelConfig()
    batches = _batches(users, batch_size, cfg, device)
    out: dict = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                 "machine": platform.processor() or platform.machine(), "users": users, "batch": batch_size,
                 "bf16": bf16, "mean_clicks": float(sum(b[0].click_mask.sum() for b in batches) / users)}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)

    # The click encoder against nn.TransformerEncoder of the same size.
    pair = {}
    post_norm = functools.partial(ReferenceClickEncoder, norm_first=False)
    for name, build in (("ours", ClickEncoder), ("reference", ReferenceClickEncoder),
                        ("reference_post_norm", post_norm)):
        torch.manual_seed(0)
        vocab = Vocabulary(cfg)
        model = WithClickHead(build(cfg, vocab, cfg.click_layers, cfg.dim), vocab, cfg.dim).to(device)
        train = _time(_train_step(model, model.loss, device, bf16), batches, device, repeats)
        model.eval()
        infer = _time(_infer_step(model.embed, device, bf16), batches, device, repeats)
        pair[name] = {"parameters": count_parameters(model.encoder), "train_seq_per_s": round(train),
                      "embed_users_per_s": round(infer)}
    out["click_encoder"] = pair
    out["ratio_train"] = round(pair["ours"]["train_seq_per_s"] / pair["reference"]["train_seq_per_s"], 3)
    out["ratio_embed"] = round(pair["ours"]["embed_users_per_s"] / pair["reference"]["embed_users_per_s"], 3)
    out["ratio_embed_vs_post_norm_fast_path"] = round(
        pair["ours"]["embed_users_per_s"] / pair["reference_post_norm"]["embed_users_per_s"], 3)

    # Whole variants.
    variants = {}
    for variant in ("duet", "shared", "click_only"):
        torch.manual_seed(0)
        model = UserModel(replace(cfg, variant=variant), ObjectiveConfig()).to(device)

        def loss(inputs, targets, model=model):
            return model.losses(model(inputs), targets)["total"]

        train = _time(_train_step(model, loss, device, bf16), batches, device, repeats)
        model.eval()
        infer = _time(_infer_step(model, device, bf16), batches, device, repeats)
        entry = {"parameters": count_parameters(model.encoder), "train_seq_per_s": round(train),
                 "embed_users_per_s": round(infer)}
        if device.type == "cuda":
            model.train()
            flops = sum(_flops(lambda i, t: loss(i, t).backward(), b) for b in batches[:4]) / \
                sum(len(b[0]) for b in batches[:4])
            entry["train_tflops"] = round(flops * train / 1e12, 3)
            if peak_tflops:
                entry["train_mfu"] = round(flops * train / 1e12 / peak_tflops, 4)
        variants[variant] = entry
    out["variants"] = variants
    return out


def main() -> None:
    warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast (default: on CUDA only)")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for MFU")
    args = parser.parse_args()
    print(json.dumps(run(args.users, args.batch, args.repeats, args.device, args.bf16, args.peak_tflops,
                         args.threads), indent=1))


if __name__ == "__main__":
    main()

