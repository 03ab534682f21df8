"""The pixel layer: codecs and pixel kernels, with no pipeline, no batch context and no torch.

- ``jpeg``: the JPEG codec (header parsing, metadata stripping, simplejpeg decode, OpenCV encode);
- ``libturbojpeg``: libjpeg-turbo 3's region decoder, callable from Numba;
- ``images``: any image file to RGB pixels, the way torchvision sees it (the writer's input);
- ``resize``: the writer's downscale to a maximum side (FFCV's size rule and filter);
- ``resample``: the anti-aliased crop-resize kernel of the loader;
- ``image_kernel``: the CPU image backend's per-sample kernel (region decode, resize, flip,
  CutMix paste);
- ``mix``: Mixup / CutMix pixel kernels and the replay of stored mixes;
- ``boxes``: conversions between the crop-box convention (top, left, height, width) and the
  conventions met at the edges (timm's and ml-dr's CutMix boxes, RoIAlign's).

Pipeline ops (``fastdata.ops``) and image backends (``fastdata.backends``) call into this
package; it never calls back.  GPU codecs belong here too.
"""
