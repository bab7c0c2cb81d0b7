"""CLIPSep-NIT's loss wrapper: noise invariant training over the assignments of noise heads to queries.

Each query mask is combined with one of the noise masks the separator exposes in ``others``, and the
criterion (``WeightedBCEMaskLoss``) is minimised over the assignments of noise heads to queries, per sample.

Reference:
    H.-W. Dong et al., "CLIPSep: Learning Text-queried Sound Separation with Noisy Unlabeled
    Videos", ICLR 2023.
"""

from collections import defaultdict
from itertools import permutations
from typing import Dict, List, Tuple

import torch
from typeguard import typechecked

from espnet2.enh.loss.criterions.abs_loss import AbsEnhLoss
from espnet2.enh.loss.wrappers.abs_wrapper import AbsLossWrapper

__all__ = ["NoiseInvariantSolver"]


class NoiseInvariantSolver(AbsLossWrapper):
    """Noise invariant training (NIT) of CLIPSep-NIT.

    For every assignment ``pi`` of the J noise masks to the N query masks (J == N), the criterion
    is evaluated on ``min(1, inf[n] + noise[pi(n)])`` against ``ref[n]`` and averaged over n; the
    per-sample minimum over ``pi`` is averaged over the batch. The regulariser
    ``reg_lambda * relu(mean(sum_j noise_j) - reg_gamma)`` keeps the noise heads from explaining
    everything.

    Reference:
        H.-W. Dong et al., "CLIPSep: Learning Text-queried Sound Separation with Noisy Unlabeled
        Videos", ICLR 2023.
    """

    @typechecked
    def __init__(
        self,
        criterion: AbsEnhLoss,
        weight: float = 1.0,
        noise_key_prefix: str = "mask_nit",
        reg_gamma: float = 0.25,
        reg_lambda: float = 0.1,
    ):
        """Initialize the wrapper.

        Args:
            criterion: Mask-domain criterion, e.g. ``WeightedBCEMaskLoss``.
            weight: Weight of this loss in the total training objective.
            noise_key_prefix: Noise masks are read from ``others[f"{noise_key_prefix}{j}"]``,
                j = 1..J.
            reg_gamma: Activation budget of the summed noise masks.
            reg_lambda: Coefficient of the regulariser.
        """
        super().__init__()
        self.criterion = criterion
        self.weight = weight
        self.noise_key_prefix = noise_key_prefix
        self.reg_gamma = reg_gamma
        self.reg_lambda = reg_lambda

    def _noise_masks(self, others: Dict) -> List[torch.Tensor]:
        masks = []
        while f"{self.noise_key_prefix}{len(masks) + 1}" in others:
            masks.append(others[f"{self.noise_key_prefix}{len(masks) + 1}"])
        return masks

    def forward(
        self, ref: List[torch.Tensor], inf: List[torch.Tensor], others: Dict = {}
    ) -> Tuple[torch.Tensor, Dict, Dict]:
        """Compute the NIT loss.

        Args:
            ref: N labels for ``criterion`` (e.g. (B, T, F, 2) from ``create_mask_label``).
            inf: N predicted query masks (B, T, F) in [0, 1].
            others: Separator outputs holding the J noise masks (B, T, F) in [0, 1].

        Returns:
            loss: Scalar, criterion term plus regulariser.
            stats: Detached scalars: ``criterion.name`` (criterion term), "nit_reg" (regulariser),
                "noise_act" (mean summed noise activation), and the criterion's own ``stats``.
            others: ``{"perm": (B, N)}`` the identity (outputs follow the query order, as ESPnet's
                ``perm`` means a source permutation) and ``{"nit_perm": (B, N)}`` the noise head assigned
                to each query.
        """
        if len(ref) != len(inf):
            raise ValueError(f"got {len(ref)} references and {len(inf)} query masks")
        noise = self._noise_masks(others)
        num_spk = len(inf)
        if len(noise) != num_spk:
            raise ValueError(
                f"NIT needs one noise mask per query: found {len(noise)} keys "
                f"'{self.noise_key_prefix}1'.. in others for {num_spk} query masks"
            )
        for j, z in enumerate(noise):
            if z.shape != inf[0].shape:
                raise ValueError(
                    f"{self.noise_key_prefix}{j + 1} has shape {tuple(z.shape)}, "
                    f"query masks have {tuple(inf[0].shape)}"
                )

        inf = [x.float() for x in inf]
        noise = [z.float() for z in noise]
        all_perms = list(permutations(range(num_spk)))
        stats_per_perm = defaultdict(list)
        perm_losses = []
        for p in all_perms:
            loss_p = 0.0
            crit_stats = defaultdict(list)
            for n, j in enumerate(p):
                combined = torch.clamp(inf[n] + noise[j], max=1.0)
                loss_p = loss_p + self.criterion(ref[n], combined)
                for k, v in getattr(self.criterion, "stats", {}).items():
                    crit_stats[k].append(v)
            perm_losses.append(loss_p / num_spk)
            for k, v in crit_stats.items():
                stats_per_perm[k].append(torch.stack(v, dim=0).mean(dim=0))

        losses = torch.stack(perm_losses, dim=1)  # (B, num_perms)
        min_loss, best = torch.min(losses, dim=1)
        crit_loss = min_loss.mean()
        perm = torch.tensor(all_perms, device=best.device, dtype=torch.long)[best]

        noise_act = torch.stack(noise, dim=0).sum(dim=0).mean()
        reg = self.reg_lambda * torch.relu(noise_act - self.reg_gamma)

        stats = {}
        for k, v in stats_per_perm.items():
            stats[k] = torch.stack(v, dim=1).gather(1, best.unsqueeze(1)).mean().detach()
        stats[self.criterion.name] = crit_loss.detach()
        stats["nit_reg"] = reg.detach()
        stats["noise_act"] = noise_act.detach()
        identity = torch.arange(num_spk, device=perm.device).expand_as(perm)
        return crit_loss + reg, stats, {"perm": identity, "nit_perm": perm}
