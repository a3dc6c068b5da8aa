"""Build hook for the one optional C extension; everything else is in pyproject.toml.

``kdlab.data._jpeg_region`` (partial, DCT-scaled JPEG decoding with libjpeg-turbo) builds where a
C compiler and libjpeg-turbo's headers are found (Debian/Ubuntu: ``libjpeg62-turbo-dev`` or
``libjpeg-turbo8-dev``; conda: ``libjpeg-turbo``). Elsewhere the build skips it with a warning and
kdlab decodes whole images with torchvision instead (same pixels, slower).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("kdlab.data._jpeg_region", ["kdlab/data/_jpeg_region.c"], libraries=["jpeg"],
                             optional=True)])
