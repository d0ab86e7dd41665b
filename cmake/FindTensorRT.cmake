# FindTensorRT
# ------------
# Finds TensorRT's headers (NvInfer.h) and its core library (libnvinfer).
#
# Hints: TensorRT_ROOT (CMake variable or environment variable), a folder holding include/NvInfer.h and
# lib/libnvinfer.so; or TensorRT_INCLUDE_DIR / TensorRT_LIBRARY set directly. The pip wheel's library folder
# (tensorrt_libs, which ships libnvinfer.so.<major> without the unversioned link) works as TensorRT_LIBRARY's home.
#
# Defines:
#   TensorRT_FOUND            headers and library found
#   TensorRT_INCLUDE_DIR      folder of NvInfer.h (may be set even when the library is absent)
#   TensorRT_LIBRARY          path of libnvinfer
#   TensorRT_VERSION          major.minor.patch read from NvInferVersion.h
#   TensorRT::nvinfer         IMPORTED target carrying both
#   TensorRT_NOT_FOUND_MESSAGE  what to do when it is not found

set(_TensorRT_HINTS ${TensorRT_ROOT} $ENV{TensorRT_ROOT})

find_path(TensorRT_INCLUDE_DIR NvInfer.h
  HINTS ${_TensorRT_HINTS}
  PATH_SUFFIXES include include/x86_64-linux-gnu include/aarch64-linux-gnu)
find_library(TensorRT_LIBRARY
  NAMES nvinfer libnvinfer.so.11 libnvinfer.so.10
  HINTS ${_TensorRT_HINTS}
  PATH_SUFFIXES lib lib64 lib/x86_64-linux-gnu lib/aarch64-linux-gnu)

if(TensorRT_INCLUDE_DIR AND EXISTS "${TensorRT_INCLUDE_DIR}/NvInferVersion.h")
  file(STRINGS "${TensorRT_INCLUDE_DIR}/NvInferVersion.h" _TensorRT_VERSION_LINES
    REGEX "#define (NV_TENSORRT|TRT)_(MAJOR|MINOR|PATCH)(_ENTERPRISE)? +[0-9]+")
  foreach(_part MAJOR MINOR PATCH)
    string(REGEX MATCH "#define (NV_TENSORRT|TRT)_${_part}(_ENTERPRISE)? +([0-9]+)" _match "${_TensorRT_VERSION_LINES}")
    set(_TensorRT_${_part} "${CMAKE_MATCH_3}")
  endforeach()
  set(TensorRT_VERSION "${_TensorRT_MAJOR}.${_TensorRT_MINOR}.${_TensorRT_PATCH}")
endif()

set(TensorRT_NOT_FOUND_MESSAGE "TensorRT not found: set -DTensorRT_ROOT=/path/to/TensorRT \
(containing include/NvInfer.h and lib/libnvinfer.so) to build the plugin")

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(TensorRT
  REQUIRED_VARS TensorRT_LIBRARY TensorRT_INCLUDE_DIR
  VERSION_VAR TensorRT_VERSION
  REASON_FAILURE_MESSAGE "${TensorRT_NOT_FOUND_MESSAGE}")

if(TensorRT_FOUND AND NOT TARGET TensorRT::nvinfer)
  add_library(TensorRT::nvinfer UNKNOWN IMPORTED)
  set_target_properties(TensorRT::nvinfer PROPERTIES
    IMPORTED_LOCATION "${TensorRT_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${TensorRT_INCLUDE_DIR}")
endif()

mark_as_advanced(TensorRT_INCLUDE_DIR TensorRT_LIBRARY)
