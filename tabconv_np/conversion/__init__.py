"""Converting trained networks: the method-independent machinery and the methods.

=================  ===============================================================
module             what it holds
=================  ===============================================================
``pipeline``       :func:`convert`, :func:`skeleton`: the steps in order
``settings``       the method-independent settings, switch flags, per-layer values
``switches``       :func:`find_switches`: the units converted or kept exact
``walk``           the calibration walk over the structure protocol
``calibration``    chunked forwards, a layer's rows and targets (:class:`LayerData`)
``masking``        priority masking, cosine similarity
``refit``          the classifier's ridge refit
``result``         :class:`ConversionResult`
``method``         the :class:`Method` seam and the registry of methods
``tabconv``        the TabConv method (PQ prototypes + lookup tables)
``maddness``       hash-tree encoding + 8-bit output-targeted tables
``lowrank``        truncated SVD of each layer, refit to the outputs
``int8``           int8 post-training quantisation, ranges calibrated on training images
``lcnn``           LCNN: a learned dictionary and sparse codes per conv, refit to the outputs
``rsdtr``          RSDTR: a tensor ring of four cores per conv, from the weights (TR-SVD search)
``prune``          magnitude pruning to CSR convolutions (``SparseConv2d``)
``binary``         binary and ternary weights (and inputs): bit planes, XNOR + popcount
``channels``       channel pruning: whole channels removed, the next conv rebuilt by least squares
``mixed``          per-switch plans: a method and settings per switch (``convert_plan``)
=================  ===============================================================

A new method subclasses :class:`Method` (three things: ``resolve``, ``fit``,
optionally ``refine``; plus ``skeleton`` for counting) and registers itself
with :func:`register_method`; nothing else changes (docs/architecture.md).
"""
from ..ops import op_reduction
from .calibration import augment_images
from .masking import cosine_similarity, priority_mask, switch_similarities
from .method import METHODS, Method, get_method, register_method
from .pipeline import convert, skeleton, table_structure
from .result import ConversionResult
from .settings import ConversionSettings
from .switches import Switch, find_switches
from .maddness import Maddness, MaddnessSettings
from .tabconv import TabConv, TabConvSettings
from .lowrank import LowRank, LowRankSettings
from .int8 import Int8, Int8Settings
from .lcnn import LCNN, LCNNSettings
from .rsdtr import RSDTR, RSDTRSettings
from .prune import Prune, PruneSettings
from .binary import Binary, BinarySettings, Ternary
from .channels import ChannelPrune, ChannelSettings

__all__ = ["convert", "skeleton", "table_structure", "op_reduction", "ConversionResult",
           "ConversionSettings", "Switch", "find_switches", "priority_mask", "cosine_similarity",
           "switch_similarities", "augment_images", "Method", "METHODS", "register_method",
           "get_method", "TabConv", "TabConvSettings", "Maddness", "MaddnessSettings", "LowRank",
           "LowRankSettings", "Int8", "Int8Settings", "LCNN", "LCNNSettings", "RSDTR", "RSDTRSettings", "Prune",
           "PruneSettings", "Binary", "Ternary", "BinarySettings", "ChannelPrune", "ChannelSettings"]
