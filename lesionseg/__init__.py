"""lesionseg: transfer learning for 3D pre-clinical brain-lesion segmentation."""
__version__ = "0.1.0"
