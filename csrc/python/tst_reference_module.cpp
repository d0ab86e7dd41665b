// spgim._tst_reference: the C++ reference of the TST attention for Python (the ONNX Runtime CPU
// twin of the TensorRT plugin). Plain CPython API and the buffer protocol, so building it needs only a
// C++17 compiler and the Python headers; spgim/tst_reference.py validates arguments and allocates out.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <string>

#include "tst_attention_common.h"
#include "tst_attention_reference.h"

namespace {

// A C-contiguous buffer view, released on scope exit.
class BufferView {
 public:
  BufferView() = default;
  BufferView(const BufferView&) = delete;
  BufferView& operator=(const BufferView&) = delete;
  ~BufferView() {
    if (acquired_) {
      PyBuffer_Release(&view_);
    }
  }

  bool acquire(PyObject* object, bool writable) {
    const int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    acquired_ = PyObject_GetBuffer(object, &view_, flags) == 0;
    return acquired_;
  }

  const Py_buffer& get() const { return view_; }

 private:
  Py_buffer view_{};
  bool acquired_ = false;
};

// 'f' (float32) or 'e' (float16), with any native byte-order prefix stripped.
char element_kind(const Py_buffer& view) {
  const char* format = view.format == nullptr ? "B" : view.format;
  if (*format == '@' || *format == '=' || *format == '<') {
    ++format;
  }
  if (std::strcmp(format, "f") == 0 && view.itemsize == 4) {
    return 'f';
  }
  if (std::strcmp(format, "e") == 0 && view.itemsize == 2) {
    return 'e';
  }
  return '?';
}

PyObject* attention(PyObject* /*module*/, PyObject* args) {
  PyObject *q_obj = nullptr, *k_obj = nullptr, *v_obj = nullptr, *out_obj = nullptr;
  double scale = 0.0;
  int num_threads = 0;
  if (!PyArg_ParseTuple(args, "OOOOdi:attention", &q_obj, &k_obj, &v_obj, &out_obj, &scale, &num_threads)) {
    return nullptr;
  }
  BufferView q, k, v, out;
  if (!q.acquire(q_obj, false) || !k.acquire(k_obj, false) || !v.acquire(v_obj, false) || !out.acquire(out_obj, true)) {
    return nullptr;
  }
  const Py_buffer *qb = &q.get(), *kb = &k.get(), *vb = &v.get(), *ob = &out.get();
  const char kind = element_kind(*qb);
  if (kind == '?' || element_kind(*kb) != kind || element_kind(*vb) != kind || element_kind(*ob) != kind) {
    PyErr_SetString(PyExc_TypeError, "q, k, v and out must all be float32 or all be float16");
    return nullptr;
  }
  if (qb->ndim != 3 || kb->ndim != 3 || vb->ndim != 3 || ob->ndim != 3) {
    PyErr_SetString(PyExc_ValueError, "q, k, v and out must be 3-D: (B, N, d), (B, M, d), (B, M, dv), (B, N, dv)");
    return nullptr;
  }
  const spgim::tst::AttentionShape shape{qb->shape[0], qb->shape[1], kb->shape[1], qb->shape[2], vb->shape[2]};
  const bool consistent = kb->shape[0] == shape.batch && vb->shape[0] == shape.batch && kb->shape[2] == shape.head_dim &&
                          vb->shape[1] == shape.keys && ob->shape[0] == shape.batch && ob->shape[1] == shape.queries &&
                          ob->shape[2] == shape.value_dim;
  if (!consistent) {
    PyErr_SetString(PyExc_ValueError, "inconsistent shapes: need q (B, N, d), k (B, M, d), v (B, M, dv), out (B, N, dv)");
    return nullptr;
  }

  std::string error;
  Py_BEGIN_ALLOW_THREADS
  try {
    if (kind == 'f') {
      spgim::tst::attention_reference(static_cast<const float*>(qb->buf), static_cast<const float*>(kb->buf),
                                      static_cast<const float*>(vb->buf), static_cast<float*>(ob->buf), shape,
                                      static_cast<float>(scale), num_threads);
    } else {
      spgim::tst::attention_reference_half(
          static_cast<const std::uint16_t*>(qb->buf), static_cast<const std::uint16_t*>(kb->buf),
          static_cast<const std::uint16_t*>(vb->buf), static_cast<std::uint16_t*>(ob->buf), shape,
          static_cast<float>(scale), num_threads);
    }
  } catch (const std::exception& e) {
    error = e.what();
  } catch (...) {
    error = "unknown C++ exception";
  }
  Py_END_ALLOW_THREADS
  if (!error.empty()) {
    PyErr_SetString(PyExc_ValueError, error.c_str());
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyMethodDef kMethods[] = {
    {"attention", attention, METH_VARARGS,
     "attention(q, k, v, out, scale, num_threads) -> None\n\n"
     "Writes softmax(q k^T * scale) v into out. Buffers are C-contiguous, all float32 or all float16;\n"
     "num_threads <= 0 uses every hardware thread. Use spgim.tst_reference.attention instead."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef kModule = {
    PyModuleDef_HEAD_INIT, "_tst_reference", "C++ reference of the TST attention op.", -1, kMethods,
    nullptr, nullptr, nullptr, nullptr,
};

}  // namespace

PyMODINIT_FUNC PyInit__tst_reference() {
  PyObject* module = PyModule_Create(&kModule);
  if (module == nullptr) {
    return nullptr;
  }
  // The op's names come from the same header as the plugin's, so the exporter cannot drift from it.
  if (PyModule_AddStringConstant(module, "PLUGIN_NAME", spgim::tst::kPluginName) < 0 ||
      PyModule_AddStringConstant(module, "PLUGIN_VERSION", spgim::tst::kPluginVersion) < 0 ||
      PyModule_AddStringConstant(module, "PLUGIN_NAMESPACE", spgim::tst::kPluginNamespace) < 0 ||
      PyModule_AddStringConstant(module, "SCALE_FIELD", spgim::tst::kScaleField) < 0 ||
      PyModule_AddIntConstant(module, "MAX_HEAD_DIM", spgim::tst::kMaxHeadDim) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
