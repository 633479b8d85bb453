// oneDNN convolutions as XLA FFI handlers: the three passes of `cnn_jax.ops.correlate`.
//
// Layouts are JAX's: activations channels-last `[N, *spatial, C]`, kernels `[*K, C_in / G, C_out]`
// (HWIO), all float32 or all bfloat16 (accumulated in float32 by oneDNN), row-major. With S the
// strides, D the kernel dilations and (lo, hi) the paddings per spatial axis:
//   forward           y[n, o]  = sum_{k, c} x_pad[n S + k D, c] w[k, c, o]       (x, w) -> y
//   backward_data     dx = the adjoint of the forward in x                       (dy, w) -> dx
//   backward_weights  dw = the adjoint of the forward in w                       (x, dy) -> dw
// Activations are described to oneDNN with their strides (no copy). Kernels are described with
// `format_tag::any`, so oneDNN picks its preferred blocked layout (a plain HWIO kernel sends it
// to a generic kernel 30-50x slower); a reorder converts to and from HWIO on every call.
// Primitives are created once per shape and kept (`Plans`); scratch memory is allocated per call
// (`scratchpad_mode::user`), because XLA may run independent custom calls concurrently.

#include <Python.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Pass : int64_t { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

using Dims = std::vector<int64_t>;

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// `[N, *spatial, C]` as oneDNN's logical `{N, C, *spatial}` with channels-last strides.
dnnl::memory::desc ActivationDesc(const Dims& shape, dnnl::memory::data_type type) {
  const size_t rank = shape.size();
  dnnl::memory::dims dims = {shape[0], shape[rank - 1]};
  dnnl::memory::dims strides(rank);
  int64_t stride = shape[rank - 1];
  strides[1] = 1;
  for (size_t axis = rank - 2; axis >= 1; --axis) {
    strides[axis + 1] = stride;
    stride *= shape[axis];
  }
  strides[0] = stride;
  for (size_t axis = 1; axis + 1 < rank; ++axis) dims.push_back(shape[axis]);
  return dnnl::memory::desc(dims, type, strides);
}

// Logical kernel dims: `{O, I, *K}`, or `{G, O / G, I / G, *K}` with groups.
dnnl::memory::dims KernelDims(const Dims& shape, int64_t groups) {
  const size_t rank = shape.size();
  const int64_t in = shape[rank - 2], out = shape[rank - 1];
  dnnl::memory::dims dims;
  if (groups > 1) dims = {groups, out / groups, in};
  else dims = {out, in};
  for (size_t axis = 0; axis + 2 < rank; ++axis) dims.push_back(shape[axis]);
  return dims;
}

// `[*K, I, O]` (HWIO, O = G x O / G) with the strides of its logical dims.
dnnl::memory::desc KernelDesc(const Dims& shape, int64_t groups, dnnl::memory::data_type type) {
  const size_t rank = shape.size();
  const int64_t in = shape[rank - 2], out = shape[rank - 1];
  dnnl::memory::dims strides;
  if (groups > 1) strides = {out / groups, 1, out};
  else strides = {1, out};
  const size_t spatial = rank - 2;
  dnnl::memory::dims spatial_strides(spatial);
  int64_t stride = in * out;
  for (size_t axis = spatial; axis-- > 0;) {
    spatial_strides[axis] = stride;
    stride *= shape[axis];
  }
  strides.insert(strides.end(), spatial_strides.begin(), spatial_strides.end());
  return dnnl::memory::desc(KernelDims(shape, groups), type, strides);
}

struct Geometry {
  dnnl::memory::dims strides, dilations, pads_lo, pads_hi;  // dilations: oneDNN's D - 1
  int64_t groups;
  dnnl::memory::data_type type;  // of every operand
};

// One pass for one shape: the primitive, the layouts it reads and writes, the kernel reorder.
struct Plan {
  dnnl::primitive primitive;
  dnnl::memory::desc x, w, y;     // the user's (JAX's) layouts
  dnnl::memory::desc w_internal;  // oneDNN's kernel layout for this primitive
  bool reorders = false;
  dnnl::reorder reorder;          // HWIO -> internal (forward, backward_data) or back
  dnnl::memory::desc reorder_scratch;
  dnnl::memory::desc scratch;
  std::string implementation;     // oneDNN's name of the kernel, e.g. 'brgconv:avx512_core'
};

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

std::shared_ptr<Plan> MakePlan(Pass pass, const Dims& x_shape, const Dims& w_shape,
                               const Dims& y_shape, const Geometry& g) {
  auto plan = std::make_shared<Plan>();
  dnnl::engine& engine = Engine();
  plan->x = ActivationDesc(x_shape, g.type);
  plan->y = ActivationDesc(y_shape, g.type);
  plan->w = KernelDesc(w_shape, g.groups, g.type);
  const dnnl::memory::desc any_w(KernelDims(w_shape, g.groups), g.type,
                                 dnnl::memory::format_tag::any);
  const dnnl::primitive_attr attr = UserScratchpad();
  const dnnl::convolution_forward::primitive_desc forward(
      engine, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, plan->x,
      any_w, plan->y, g.strides, g.dilations, g.pads_lo, g.pads_hi, attr);
  if (pass == kForward) {
    plan->primitive = dnnl::convolution_forward(forward);
    plan->w_internal = forward.weights_desc();
    plan->scratch = forward.scratchpad_desc();
    plan->implementation = forward.impl_info_str();
  } else if (pass == kBackwardData) {
    const dnnl::convolution_backward_data::primitive_desc backward(
        engine, dnnl::algorithm::convolution_direct, plan->x, any_w, plan->y, g.strides,
        g.dilations, g.pads_lo, g.pads_hi, forward, attr);
    plan->primitive = dnnl::convolution_backward_data(backward);
    plan->w_internal = backward.weights_desc();
    plan->scratch = backward.scratchpad_desc();
    plan->implementation = backward.impl_info_str();
  } else {
    const dnnl::convolution_backward_weights::primitive_desc backward(
        engine, dnnl::algorithm::convolution_direct, plan->x, any_w, plan->y, g.strides,
        g.dilations, g.pads_lo, g.pads_hi, forward, attr);
    plan->primitive = dnnl::convolution_backward_weights(backward);
    plan->w_internal = backward.diff_weights_desc();
    plan->scratch = backward.scratchpad_desc();
    plan->implementation = backward.impl_info_str();
  }
  plan->reorders = plan->w_internal != plan->w;
  if (plan->reorders) {
    const bool to_internal = pass != kBackwardWeights;
    const dnnl::reorder::primitive_desc reorder(
        engine, to_internal ? plan->w : plan->w_internal, engine,
        to_internal ? plan->w_internal : plan->w, attr);
    plan->reorder = dnnl::reorder(reorder);
    plan->reorder_scratch = reorder.scratchpad_desc();
  }
  return plan;
}

std::shared_ptr<Plan> CachedPlan(Pass pass, const Dims& x_shape, const Dims& w_shape,
                                 const Dims& y_shape, const Geometry& g) {
  static std::mutex mutex;
  static std::map<Dims, std::shared_ptr<Plan>> plans;
  Dims key = {pass, g.groups, static_cast<int64_t>(g.type)};
  for (const Dims* part : {&x_shape, &w_shape, &y_shape, &g.strides, &g.dilations, &g.pads_lo,
                           &g.pads_hi}) {
    key.push_back(static_cast<int64_t>(part->size()));
    key.insert(key.end(), part->begin(), part->end());
  }
  std::lock_guard<std::mutex> lock(mutex);
  auto found = plans.find(key);
  if (found != plans.end()) return found->second;
  auto plan = MakePlan(pass, x_shape, w_shape, y_shape, g);
  plans.emplace(std::move(key), plan);
  return plan;
}

// 64-byte aligned memory owned for the duration of one call.
struct Scratch {
  explicit Scratch(size_t bytes)
      : data(bytes ? std::aligned_alloc(64, (bytes + 63) / 64 * 64) : nullptr) {}
  ~Scratch() { std::free(data); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* data;
};

Dims ShapeOf(ffi::Span<const int64_t> dims) { return Dims(dims.begin(), dims.end()); }

dnnl::memory::dims ToDims(ffi::Span<const int64_t> values, int64_t offset = 0) {
  dnnl::memory::dims dims;
  for (int64_t v : values) dims.push_back(v + offset);
  return dims;
}

template <ffi::DataType T>
ffi::Error Run(Pass pass, dnnl::memory::data_type type, ffi::Buffer<T> a, ffi::Buffer<T> b,
               ffi::ResultBuffer<T> out, ffi::Span<const int64_t> strides,
               ffi::Span<const int64_t> dilations, ffi::Span<const int64_t> pads_lo,
               ffi::Span<const int64_t> pads_hi, int64_t groups) {
  try {
    const Geometry g{ToDims(strides), ToDims(dilations, -1), ToDims(pads_lo), ToDims(pads_hi),
                     groups, type};
    void* a_data = a.untyped_data();
    void* b_data = b.untyped_data();
    void* out_data = out->untyped_data();
    Dims x_shape, w_shape, y_shape;
    void *x_data, *w_data, *y_data;
    if (pass == kForward) {
      x_shape = ShapeOf(a.dimensions()), w_shape = ShapeOf(b.dimensions());
      y_shape = ShapeOf(out->dimensions());
      x_data = a_data, w_data = b_data, y_data = out_data;
    } else if (pass == kBackwardData) {
      y_shape = ShapeOf(a.dimensions()), w_shape = ShapeOf(b.dimensions());
      x_shape = ShapeOf(out->dimensions());
      y_data = a_data, w_data = b_data, x_data = out_data;
    } else {
      x_shape = ShapeOf(a.dimensions()), y_shape = ShapeOf(b.dimensions());
      w_shape = ShapeOf(out->dimensions());
      x_data = a_data, y_data = b_data, w_data = out_data;
    }
    const std::shared_ptr<Plan> plan = CachedPlan(pass, x_shape, w_shape, y_shape, g);
    dnnl::engine& engine = Engine();
    dnnl::stream stream(engine);
    dnnl::memory x(plan->x, engine, x_data), y(plan->y, engine, y_data);
    dnnl::memory w(plan->w, engine, w_data);
    Scratch w_buffer(plan->reorders ? plan->w_internal.get_size() : 0);
    dnnl::memory w_internal =
        plan->reorders ? dnnl::memory(plan->w_internal, engine, w_buffer.data) : w;
    Scratch scratch(plan->scratch.get_size());
    dnnl::memory scratch_memory(plan->scratch, engine, scratch.data);
    Scratch reorder_scratch(plan->reorders ? plan->reorder_scratch.get_size() : 0);
    auto reorder = [&](dnnl::memory& from, dnnl::memory& to) {
      plan->reorder.execute(stream, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to},
                                     {DNNL_ARG_SCRATCHPAD,
                                      dnnl::memory(plan->reorder_scratch, engine,
                                                   reorder_scratch.data)}});
    };
    if (pass == kForward) {
      if (plan->reorders) reorder(w, w_internal);
      plan->primitive.execute(stream, {{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, w_internal},
                                       {DNNL_ARG_DST, y}, {DNNL_ARG_SCRATCHPAD, scratch_memory}});
    } else if (pass == kBackwardData) {
      if (plan->reorders) reorder(w, w_internal);
      plan->primitive.execute(stream, {{DNNL_ARG_DIFF_DST, y}, {DNNL_ARG_WEIGHTS, w_internal},
                                       {DNNL_ARG_DIFF_SRC, x},
                                       {DNNL_ARG_SCRATCHPAD, scratch_memory}});
    } else {
      plan->primitive.execute(stream, {{DNNL_ARG_SRC, x}, {DNNL_ARG_DIFF_DST, y},
                                       {DNNL_ARG_DIFF_WEIGHTS, w_internal},
                                       {DNNL_ARG_SCRATCHPAD, scratch_memory}});
      if (plan->reorders) reorder(w_internal, w);
    }
    stream.wait();
    return ffi::Error::Success();
  } catch (const std::exception& error) {
    return ffi::Error::Internal(std::string("oneDNN convolution failed: ") + error.what());
  }
}

constexpr dnnl::memory::data_type OnednnType(ffi::DataType type) {
  return type == ffi::DataType::BF16 ? dnnl::memory::data_type::bf16
                                     : dnnl::memory::data_type::f32;
}

template <Pass pass, ffi::DataType T>
ffi::Error RunPass(ffi::Buffer<T> a, ffi::Buffer<T> b, ffi::ResultBuffer<T> out,
                   ffi::Span<const int64_t> strides, ffi::Span<const int64_t> dilations,
                   ffi::Span<const int64_t> pads_lo, ffi::Span<const int64_t> pads_hi,
                   int64_t groups) {
  return Run<T>(pass, OnednnType(T), a, b, out, strides, dilations, pads_lo, pads_hi, groups);
}

// Whether a kernel's ISA (oneDNN's name after the last ':', e.g. 'avx512_core_bf16' in
// 'brgconv:avx512_core_bf16') has bfloat16 instructions: AVX512-BF16 or AMX.
bool NativeBfloat16(const std::string& implementation) {
  const std::string isa = implementation.substr(implementation.rfind(':') + 1);
  return isa.find("bf16") != std::string::npos || isa.find("amx") != std::string::npos;
}

// Whether this CPU runs oneDNN's bfloat16 convolutions with bfloat16 instructions: all three
// passes of a small one. Elsewhere oneDNN emulates bfloat16 on AVX-512 ('jit_bf16:avx512_core',
// slower than XLA's bfloat16 convolutions) or falls back to its reference kernels ('ref:any').
bool Bfloat16Supported() {
  try {
    const dnnl::memory::data_type bf16 = dnnl::memory::data_type::bf16;
    const Geometry g{{1, 1}, {0, 0}, {1, 1}, {1, 1}, 1, bf16};
    const Dims x = {2, 8, 8, 16}, w = {3, 3, 16, 16};
    for (Pass pass : {kForward, kBackwardData, kBackwardWeights}) {
      if (!NativeBfloat16(MakePlan(pass, x, w, x, g)->implementation)) return false;
    }
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace

#define CNN_JAX_ONEDNN_HANDLER(name, pass, type)                             \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, (RunPass<pass, type>),                 \
                                ffi::Ffi::Bind()                             \
                                    .Arg<ffi::Buffer<type>>()                \
                                    .Arg<ffi::Buffer<type>>()                \
                                    .Ret<ffi::Buffer<type>>()                \
                                    .Attr<ffi::Span<const int64_t>>("strides")   \
                                    .Attr<ffi::Span<const int64_t>>("dilations") \
                                    .Attr<ffi::Span<const int64_t>>("pads_lo")   \
                                    .Attr<ffi::Span<const int64_t>>("pads_hi")   \
                                    .Attr<int64_t>("groups"));

CNN_JAX_ONEDNN_HANDLER(OnednnForward, kForward, ffi::DataType::F32)
CNN_JAX_ONEDNN_HANDLER(OnednnBackwardData, kBackwardData, ffi::DataType::F32)
CNN_JAX_ONEDNN_HANDLER(OnednnBackwardWeights, kBackwardWeights, ffi::DataType::F32)
CNN_JAX_ONEDNN_HANDLER(OnednnForwardBf16, kForward, ffi::DataType::BF16)
CNN_JAX_ONEDNN_HANDLER(OnednnBackwardDataBf16, kBackwardData, ffi::DataType::BF16)
CNN_JAX_ONEDNN_HANDLER(OnednnBackwardWeightsBf16, kBackwardWeights, ffi::DataType::BF16)

static PyObject* PyBfloat16Supported(PyObject*, PyObject*) {
  return PyBool_FromLong(Bfloat16Supported());
}

// The Python module: `targets`, a dict of handler capsules for `jax.ffi.register_ffi_target`
// ('<pass>' for float32, '<pass>_bf16' for bfloat16), and `bfloat16_supported()`.
static PyMethodDef onednn_methods[] = {
    {"bfloat16_supported", PyBfloat16Supported, METH_NOARGS,
     "Whether oneDNN runs bfloat16 convolutions (all three passes) with bfloat16 "
     "instructions on this CPU."},
    {nullptr, nullptr, 0, nullptr}};
static PyModuleDef onednn_module = {PyModuleDef_HEAD_INIT, "_onednn_conv",
                                    "oneDNN convolution handlers for jax.ffi.", -1,
                                    onednn_methods};

PyMODINIT_FUNC PyInit__onednn_conv() {
  PyObject* module = PyModule_Create(&onednn_module);
  if (module == nullptr) return nullptr;
  PyObject* targets = PyDict_New();
  const std::pair<const char*, XLA_FFI_Handler*> handlers[] = {
      {"forward", OnednnForward},
      {"backward_data", OnednnBackwardData},
      {"backward_weights", OnednnBackwardWeights},
      {"forward_bf16", OnednnForwardBf16},
      {"backward_data_bf16", OnednnBackwardDataBf16},
      {"backward_weights_bf16", OnednnBackwardWeightsBf16}};
  for (const auto& [name, handler] : handlers) {
    PyObject* capsule = PyCapsule_New(reinterpret_cast<void*>(handler), nullptr, nullptr);
    if (capsule == nullptr || PyDict_SetItemString(targets, name, capsule) < 0) {
      Py_XDECREF(capsule);
      Py_DECREF(targets);
      Py_DECREF(module);
      return nullptr;
    }
    Py_DECREF(capsule);
  }
  if (PyModule_AddObject(module, "targets", targets) < 0) {
    Py_DECREF(targets);
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
