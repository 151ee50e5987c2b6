"""SAM model code: builders for the segment_anything architectures, MobileSAM's TinyViT
encoder, the transformers ``SamModel`` builder and the state-dict converters between them."""
