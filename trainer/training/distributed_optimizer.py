"""--use-distributed-optimizer: AdamW with its states sharded over the data-parallel ranks (ZeRO-1,
Megatron's distributed optimizer).

The parameters of one TP rank are laid end to end in one flat order (the optimizer's groups, in
order) and cut into DP equal ranges; DP rank r owns range r. A step reduce-scatters the
gradients (each rank receives the DP sum of its range), clips with the global norm (summed over
the ranges and the TP shards), runs torch's AdamW on its range only, and all-gathers the updated
parameters. AdamW is elementwise, so the result is the unsharded AdamW's; each rank holds 2/DP of
the moment bytes. The model's fp32 parameters are the master weights: the owned pieces are views
into them, updated in place.

`state_dict()` / `load_state_dict()` speak torch AdamW's format over all of the parameters
(`state_dict` is collective: every DP rank must call it), so a checkpoint is the same with or
without the flag and resumes at any DP and TP.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistributedAdamW"]


@dataclass(frozen=True)
class _Piece:
    param: torch.Tensor  # the model parameter
    index: int  # its position in the flat order
    lo: int  # first element of the parameter in this rank's range
    hi: int  # one past the last
    offset: int  # where the piece starts inside this rank's range


class DistributedAdamW:
    # save_checkpoint calls state_dict() on every DP rank, not on DP rank 0 only
    collective_state_dict = True

    def __init__(
        self, param_groups: list[dict], dp_group: dist.ProcessGroup, **adamw_kwargs
    ) -> None:
        self.dp_group = dp_group
        self.dp, self.dp_rank = dist.get_world_size(dp_group), dist.get_rank(dp_group)
        self.param_groups = [dict(g, params=list(g["params"])) for g in param_groups]
        params = [p for g in self.param_groups for p in g["params"]]
        for p in params:
            if not p.is_contiguous():
                raise ValueError("the distributed optimizer needs contiguous parameters")
        self.params = params
        self.numel = sum(p.numel() for p in params)
        self.shard = -(-self.numel // self.dp)  # elements per rank; the last range is padded
        lo_rank, hi_rank = self.dp_rank * self.shard, (self.dp_rank + 1) * self.shard
        self.pieces: list[list[_Piece]] = []  # per group
        start, index = 0, 0
        for g in self.param_groups:
            group_pieces = []
            for p in g["params"]:
                lo, hi = max(lo_rank, start), min(hi_rank, start + p.numel())
                if lo < hi:
                    group_pieces.append(_Piece(p, index, lo - start, hi - start, lo - lo_rank))
                start += p.numel()
                index += 1
            self.pieces.append(group_pieces)
        if not any(self.pieces):
            raise ValueError(
                f"{self.numel} parameters are too few to shard over {self.dp} data-parallel ranks"
            )
        self.views = [[self._view(pc) for pc in gp] for gp in self.pieces]
        inner_groups = [
            {**{k: v for k, v in g.items() if k != "params"}, "params": views}
            for g, views in zip(self.param_groups, self.views, strict=True)
        ]
        # a group with no piece in this rank's range is left out of the inner AdamW
        self._inner_index = [i for i, g in enumerate(inner_groups) if g["params"]]
        self.inner = torch.optim.AdamW([inner_groups[i] for i in self._inner_index], **adamw_kwargs)

    @staticmethod
    def _view(pc: _Piece) -> torch.Tensor:
        view = pc.param.detach().view(-1)[pc.lo : pc.hi]
        if getattr(pc.param, "tp_dim", None) is not None:
            view.tp_group = pc.param.tp_group  # read by clip_grad_norm_: a TP-sharded piece
        return view

    # -------------------------------------------------------------------------------- a step
    def reduce_gradients(self) -> None:
        """Reduce-scatter of the flat gradients over DP: each owned piece gets the DP sum."""
        flat = torch.zeros(self.shard * self.dp, dtype=torch.float32, device=self.params[0].device)
        start = 0
        for p in self.params:
            if p.grad is not None:
                flat[start : start + p.numel()].copy_(p.grad.reshape(-1))
            start += p.numel()
        local = torch.empty(self.shard, dtype=flat.dtype, device=flat.device)
        dist.reduce_scatter_single(local, flat, group=self.dp_group)
        for gp, views in zip(self.pieces, self.views, strict=True):
            for pc, view in zip(gp, views, strict=True):
                view.grad = local[pc.offset : pc.offset + pc.hi - pc.lo]

    def grad_views(self) -> list[torch.Tensor]:
        """This rank's pieces (with .grad after reduce_gradients), for clip_grad_norm_."""
        return [v for views in self.views for v in views]

    def step(self) -> None:
        for i, inner in zip(self._inner_index, self.inner.param_groups, strict=True):
            for k, v in self.param_groups[i].items():
                if k != "params":
                    inner[k] = v  # lr set by the schedule on the outer groups
        self.inner.step()
        self._all_gather_params()

    def _all_gather_params(self) -> None:
        device = self.params[0].device
        local = torch.zeros(self.shard, dtype=torch.float32, device=device)
        for gp, views in zip(self.pieces, self.views, strict=True):
            for pc, view in zip(gp, views, strict=True):
                local[pc.offset : pc.offset + pc.hi - pc.lo].copy_(view)
        flat = torch.empty(self.shard * self.dp, dtype=local.dtype, device=device)
        dist.all_gather_single(flat, local, group=self.dp_group)
        start = 0
        with torch.no_grad():
            for p in self.params:
                p.copy_(flat[start : start + p.numel()].view_as(p))
                start += p.numel()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None
        for views in self.views:
            for v in views:
                v.grad = None

    def state_bytes(self) -> int:
        """Bytes of the AdamW moments this rank holds."""
        return sum(
            t.numel() * t.element_size()
            for s in self.inner.state.values()
            for t in s.values()
            if torch.is_tensor(t) and t.dim() > 0
        )

    # -------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """torch AdamW's state_dict over every parameter (collective over DP)."""
        device = self.params[0].device
        moments = {}
        for key in ("exp_avg", "exp_avg_sq"):
            local = torch.zeros(self.shard, dtype=torch.float32, device=device)
            for gp, views in zip(self.pieces, self.views, strict=True):
                for pc, view in zip(gp, views, strict=True):
                    if view in self.inner.state:
                        local[pc.offset : pc.offset + pc.hi - pc.lo].copy_(
                            self.inner.state[view][key]
                        )
            flat = torch.empty(self.shard * self.dp, dtype=local.dtype, device=device)
            dist.all_gather_single(flat, local, group=self.dp_group)
            moments[key] = flat
        state, start = {}, 0
        if self.inner.state:  # every rank holds pieces and steps them together
            step = next(iter(self.inner.state.values()))["step"]
            for i, p in enumerate(self.params):
                piece = {
                    k: m[start : start + p.numel()].view_as(p).clone() for k, m in moments.items()
                }
                state[i] = {"step": step.clone(), **piece}
                start += p.numel()
        groups, index = [], 0
        for g in self.param_groups:
            n = len(g["params"])
            hyper = {**self.inner.defaults, **{k: v for k, v in g.items() if k != "params"}}
            groups.append({**hyper, "params": list(range(index, index + n))})
            index += n
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """torch AdamW's format over every parameter; this rank keeps its pieces."""
        saved = state_dict["param_groups"]
        if [len(g["params"]) for g in saved] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("the saved optimizer has other parameter groups")
        for g, s in zip(self.param_groups, saved, strict=True):
            g.update({k: v for k, v in s.items() if k != "params"})
        flat_ids = [i for g in saved for i in g["params"]]
        inner_state = {}
        position = 0  # the inner optimizer numbers its own params in group order
        for gi in self._inner_index:
            for pc in self.pieces[gi]:
                entry = state_dict["state"].get(flat_ids[pc.index])
                if entry is not None:
                    inner_state[position] = {
                        "step": torch.as_tensor(entry["step"], dtype=torch.float32).clone(),
                        **{
                            k: entry[k].reshape(-1)[pc.lo : pc.hi].clone().to(torch.float32)
                            for k in ("exp_avg", "exp_avg_sq")
                        },
                    }
                position += 1
        inner_groups = self.inner.state_dict()["param_groups"]
        for i, g in zip(self._inner_index, inner_groups, strict=True):
            g.update({k: v for k, v in self.param_groups[i].items() if k != "params"})
        self.inner.load_state_dict({"state": inner_state, "param_groups": inner_groups})
