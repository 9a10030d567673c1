"""Per-run TeaCache state: one skip decision per step, one cached residual per condition uuid.

A :class:`TeaCacheRun` lives from the start to the end of one sampling run (the ``OUTER_SAMPLE``
wrapper creates it and calls :meth:`TeaCacheRun.close` in ``finally``). Every diffusion-model call
gets a :class:`CallContext`; the block patches report to the run through it.

Why one decision per step, keyed on the sigma: cond and uncond see the same latent and the same
timestep, so block 0's modulated input is the same for both, and the decision cannot differ
between them. Keying on the sigma (not on call counts or ``cond_or_uncond``) makes batched and
separate cond/uncond calls, cfg 1, several conds and batch > 1 behave alike. The residuals differ
per condition, so they are kept per uuid.
"""

from __future__ import annotations

import bisect
import datetime
import logging
from typing import Any

import torch

from .config import TeaCacheConfig
from .records import append_run
from .signal import modulated_input, rel_l1

log = logging.getLogger("comfyui-quadtree-tile.teacache")

NAME = "TeaCache (Qwen-Image)"


class CallContext:
    """One diffusion-model call: its conditions, its noisy-image token count, and block 0's verdict."""

    __slots__ = ("uuids", "n_img", "block0", "sigma", "decided", "skip", "h0", "signal")

    def __init__(self, uuids: list[Any], n_img: int, block0: torch.nn.Module, sigma: float) -> None:
        self.uuids = uuids
        self.n_img = n_img
        self.block0 = block0
        self.sigma = sigma
        self.decided = False
        self.skip = False
        self.h0: torch.Tensor | None = None
        self.signal: torch.Tensor | None = None


class TeaCacheRun:
    """State of one sampling run; free of tensors after :meth:`close`."""

    def __init__(self, config: TeaCacheConfig, schedule: list[float], sampling: dict[str, Any] | None = None) -> None:
        self.config = config
        self.schedule = [float(s) for s in schedule]
        self.steps = max(len(self.schedule) - 1, 0)
        self.sampling = dict(sampling or {})
        self.calibrating = config.mode == "calibrate"
        self.label = "calibration" if self.calibrating else config.rescale.label
        self.disabled: str | None = None
        self.call: CallContext | None = None
        # decision state
        self.step_sigma: float | None = None
        self.step_skip = False
        self.prev_signal: torch.Tensor | None = None
        self.decider: Any = None
        self.acc = 0.0
        self.consecutive = 0
        self.residuals: dict[Any, torch.Tensor] = {}
        # calibration state
        self.prev_by_uuid: dict[Any, tuple[float, torch.Tensor | None, torch.Tensor | None]] = {}
        self.records: list[dict[str, Any]] = []
        # counters
        self.calls = 0
        self.skipped_calls = 0
        self.decisions = 0
        self.skipped_steps = 0
        self._warned: set[str] = set()
        if not self.calibrating and self.steps < config.min_steps:
            self.disabled = (
                f"the run has {self.steps} steps, fewer than min_steps={config.min_steps} (few-step runs gain "
                "little and lose quality; set min_steps to 0 to cache them too)"
            )
        elif not self.calibrating:
            log.info(
                "%s: %s, threshold %g, skips allowed from %.2f to %.2f of %d steps%s, cache on %s",
                NAME,
                "uncalibrated (threshold on raw input change)"
                if not config.rescale.calibrated
                else f"profile '{config.rescale.label}'",
                config.threshold,
                config.start,
                config.end,
                self.steps,
                f", at most {config.max_skips} in a row" if config.max_skips else "",
                config.cache_device,
            )

    # ---- per call -------------------------------------------------------------------------------

    def begin_call(
        self, model: torch.nn.Module, x: torch.Tensor, transformer_options: dict, kwargs: dict, ours: bool
    ) -> CallContext | None:
        """Start a diffusion-model call; ``None`` means: run it untouched, neither read nor write the cache.

        ``ours`` says whether every block still routes through this pack's patches (a node such as
        Skip Layer Guidance may have replaced some for this call).
        """
        self.calls += 1
        if self.disabled is not None:
            return None
        sigmas = transformer_options.get("sigmas")
        uuids = transformer_options.get("uuids")
        if sigmas is None or not uuids or x.shape[0] % len(uuids):
            self._warn_once("no-uuids", "a model call without sampler sigmas/uuids was computed and not cached")
            return None
        if not ours:
            self._warn_once(
                "foreign",
                "another patch replaced transformer blocks for some calls (e.g. Skip Layer Guidance); "
                "those calls are computed and neither use nor update the cache",
            )
            return None
        control = kwargs.get("control")
        has_control = isinstance(control, dict) and any(a is not None for a in (control.get("input") or ()))
        if has_control or transformer_options.get("patches", {}).get("double_block"):
            what = "ControlNet inputs" if has_control else "per-block 'double_block' patches"
            self._disable(f"{what} are added between blocks, which a cached residual cannot account for")
            return None
        p = int(getattr(model, "patch_size", 2))
        t = x.shape[2] if x.ndim == 5 else 1
        n_img = t * (-(-x.shape[-2] // p)) * (-(-x.shape[-1] // p))
        sigma = float(sigmas.reshape(-1)[0])
        self.call = CallContext(list(uuids), n_img, model.transformer_blocks[0], sigma)
        return self.call

    def end_call(self, call: CallContext | None, out: torch.Tensor | None) -> None:
        """Count the call; in calibration, record the output change per condition."""
        self.call = None
        if call is None:
            return
        if call.skip:
            self.skipped_calls += 1
        if self.calibrating and out is not None and call.signal is not None:
            self._record(call, out)

    # ---- called by the block patches ------------------------------------------------------------

    def on_first_block(self, call: CallContext, img: torch.Tensor, temb: torch.Tensor) -> None:
        """Block 0 of a call: compute the signal, take (or reuse) the step's decision."""
        call.decided = True
        n = call.n_img
        if n > img.shape[1]:
            self._warn_once("tokens", f"image tokens ({img.shape[1]}) fewer than the latent implies ({n}); not cached")
            return
        tokens = img[:, :n]
        if self.calibrating:
            call.signal = modulated_input(call.block0, tokens, temb)
            return
        if call.sigma != self.step_sigma:
            u = self.decider if self.decider in call.uuids else call.uuids[0]
            size = img.shape[0] // len(call.uuids)
            j = call.uuids.index(u) * size
            signal = modulated_input(call.block0, tokens[j : j + size], temb[j : j + size])
            self.step_skip = self._decide(call.sigma, signal, u)
            self.step_sigma = call.sigma
        size = img.shape[0] // len(call.uuids)
        call.skip = self.step_skip and all(
            u in self.residuals and self.residuals[u].shape == (size, n, img.shape[2]) for u in call.uuids
        )
        if not call.skip:
            call.h0 = tokens

    def skipped_img(self, call: CallContext, img: torch.Tensor) -> torch.Tensor:
        """The image stream after the last block on a skipped call: input + cached residual, per condition."""
        n = call.n_img
        res = torch.cat([self.residuals[u].to(img.device, non_blocking=True) for u in call.uuids])
        tokens = (img[:, :n].float() + res).to(img.dtype)
        return tokens if n == img.shape[1] else torch.cat([tokens, img[:, n:]], dim=1)

    def on_last_block(self, call: CallContext, img_out: torch.Tensor) -> None:
        """After the last block of a computed call: keep ``out - in`` of the image tokens per condition."""
        if call.h0 is None:
            return
        residual = img_out[:, : call.n_img].float() - call.h0.float()
        call.h0 = None
        for u, chunk in zip(call.uuids, residual.chunk(len(call.uuids)), strict=True):
            self.residuals[u] = self._to_cache(chunk)

    # ---- decisions ------------------------------------------------------------------------------

    def fraction(self, sigma: float) -> float:
        """Position of ``sigma`` in the run's schedule: 0 at the first step, 1 at the end (interpolated)."""
        s = self.schedule
        if self.steps == 0 or sigma >= s[0]:
            return 0.0
        neg = [-v for v in s]
        i = bisect.bisect_right(neg, -sigma) - 1
        if i >= self.steps:
            return 1.0
        span = s[i] - s[i + 1]
        return (i + ((s[i] - sigma) / span if span > 0 else 0.0)) / self.steps

    def _decide(self, sigma: float, signal: torch.Tensor, uuid: Any) -> bool:
        cfg = self.config
        rel = None
        prev = self.prev_signal
        if prev is not None and self.decider == uuid and prev.shape == signal.shape:
            rel = float(rel_l1(signal, prev))
        self.prev_signal, self.decider = signal.detach(), uuid
        self.decisions += 1
        frac = self.fraction(sigma)
        skip = False
        inc = 0.0
        if rel is None:
            why = "first step" if prev is None else "shape change"
        elif not cfg.start <= frac <= cfg.end:
            why = "outside start/end"
        elif cfg.max_skips and self.consecutive >= cfg.max_skips:
            why = "max consecutive skips"
        else:
            inc = cfg.rescale(rel)
            self.acc += inc
            skip = self.acc < cfg.threshold
            why = "below threshold" if skip else "threshold reached"
        if skip:
            self.consecutive += 1
            self.skipped_steps += 1
        else:
            self.acc = 0.0
            self.consecutive = 0
        log.debug(
            "%s: sigma %.4f (%.2f) rel %s inc %.4f acc %.4f -> %s (%s)",
            NAME,
            sigma,
            frac,
            "-" if rel is None else f"{rel:.4f}",
            inc,
            self.acc,
            "skip" if skip else "compute",
            why,
        )
        return skip

    # ---- calibration ----------------------------------------------------------------------------

    def _record(self, call: CallContext, out: torch.Tensor) -> None:
        k = len(call.uuids)
        for u, sig, o in zip(call.uuids, call.signal.chunk(k), out.chunk(k), strict=True):
            prev = self.prev_by_uuid.get(u)
            if prev is not None and prev[0] == call.sigma:
                continue  # a second call at the same sigma (e.g. a guidance extra): not a step pair
            if prev is not None and prev[1].shape == sig.shape and prev[2].shape == o.shape:
                self.records.append(
                    {
                        "sigma": call.sigma,
                        "uuid": str(u),
                        "input_change": float(rel_l1(sig, prev[1])),
                        "output_change": float(rel_l1(o, prev[2])),
                    }
                )
            self.prev_by_uuid[u] = (call.sigma, sig.detach(), o.detach())

    # ---- end of run -----------------------------------------------------------------------------

    def close(self) -> None:
        """Log the summary, write calibration records, and drop every cached tensor."""
        try:
            if self.calibrating:
                self._write_records()
            elif self.disabled is not None and self.decisions == 0:
                log.info(
                    "%s: caching off for this run: %s; computed %d of %d calls, none skipped",
                    NAME,
                    self.disabled,
                    self.calls,
                    self.calls,
                )
            else:
                log.info(
                    "%s (%s, threshold %g): computed %d of %d calls (skipped %d of %d steps)%s",
                    NAME,
                    self.label,
                    self.config.threshold,
                    self.calls - self.skipped_calls,
                    self.calls,
                    self.skipped_steps,
                    self.decisions,
                    f"; caching was switched off: {self.disabled}" if self.disabled else "",
                )
        finally:
            self.residuals.clear()
            self.prev_signal = None
            self.prev_by_uuid.clear()
            self.call = None

    def _write_records(self) -> None:
        if not self.records:
            log.warning("TeaCache Calibrate: no step pairs recorded in this run; nothing written")
            return
        run = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **dict(self.config.provenance),
            **self.sampling,
            "records": self.records,
        }
        n_runs = append_run(self.config.record_path, run)
        log.info(
            "TeaCache Calibrate: recorded %d step pairs over %d model calls to %s (%d runs in the file)",
            len(self.records),
            self.calls,
            self.config.record_path,
            n_runs,
        )

    # ---- helpers --------------------------------------------------------------------------------

    def _to_cache(self, t: torch.Tensor) -> torch.Tensor:
        if self.config.cache_device == "device" or t.device.type == "cpu":
            return t
        buf = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=t.device.type == "cuda")
        buf.copy_(t, non_blocking=True)
        return buf

    def _disable(self, reason: str) -> None:
        if self.disabled is None:
            self.disabled = reason
            log.warning("%s: caching switched off for the rest of this run: %s", NAME, reason)
        self.residuals.clear()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s: %s", NAME, message)
