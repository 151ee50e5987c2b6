"""The cached SAM core: encode once, decode any number of prompts, segment everything."""

from textseg.sam.automatic import AutomaticMaskGenerator
from textseg.sam.backends import SamBackend
from textseg.sam.backends.segment_anything import SegmentAnythingBackend
from textseg.sam.cache import CacheStats, EmbeddingCache, ImageEmbedding
from textseg.sam.core import SamCore
from textseg.sam.prompts import Prompts

__all__ = [
    "AutomaticMaskGenerator",
    "CacheStats",
    "EmbeddingCache",
    "ImageEmbedding",
    "Prompts",
    "SamBackend",
    "SamCore",
    "SegmentAnythingBackend",
]
