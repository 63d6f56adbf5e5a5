"""What an export produces (:class:`ExportResult`): made by :mod:`.prune`, read by :mod:`.report`."""
from dataclasses import dataclass, field
from typing import Dict, Optional

from omegaconf import DictConfig

from ..cost import Cost
from ..layer_sizes import LayerSizes
from ..models.wav2vec2_ctc_pruning import Wav2Vec2CtcPruning


@dataclass
class ExportResult:
    """The compact model, its config (``cfg.model``), and what the report needs: the per-layer sizes and costs
    (per component, at :data:`~fairseq_prune.cost.REFERENCE_SAMPLES`) before and after, and with ``round_to > 1``
    the cost of the same export without rounding."""

    model: Wav2Vec2CtcPruning
    model_cfg: DictConfig
    family: str
    round_to: int
    sizes_before: LayerSizes
    sizes_after: LayerSizes
    before: Dict[str, Cost] = field(default_factory=dict)
    after: Dict[str, Cost] = field(default_factory=dict)
    unrounded: Optional[Dict[str, Cost]] = None
    summary: Dict = field(default_factory=dict)
