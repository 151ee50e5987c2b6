"""What the app writes in its output folder (no heavy imports: the CLI reads these to build
its options)."""

#: The COCO file of the accepted annotations, in the output folder.
ANNOTATION_FILE = "textseg_annotations.json"
#: The export folder inside the output folder (skipped when listing images).
EXPORT_DIR = "textseg_export"
