#include "tst_attention_plugin.h"

#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <string>

#include "tst_attention_common.h"
#include "tst_attention_cuda.h"

namespace spgim::tst {
namespace {

using nvinfer1::DataType;
using nvinfer1::Dims;

constexpr int32_t kNbInputs = 3;  // q, k, v
constexpr int32_t kNbOutputs = 1;
constexpr int32_t kQuery = 0;
constexpr int32_t kKey = 1;
constexpr int32_t kValue = 2;

void log_error(const char* message) noexcept {
  try {
    if (nvinfer1::ILogger* logger = getLogger()) {
      logger->log(nvinfer1::ILogger::Severity::kERROR, (std::string(kPluginName) + ": " + message).c_str());
    }
  } catch (...) {
    // Logging must never take the engine down.
  }
}

bool supported_type(DataType type) { return type == DataType::kFLOAT || type == DataType::kHALF; }

// -1 marks an extent unknown at build time; only known extents are checked.
bool same_or_unknown(int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; }

bool head_dim_ok(int64_t dim, int64_t max_dim) {
  const int64_t bound = dim >= 0 ? dim : max_dim;
  return bound < 0 || (bound >= 1 && bound <= kMaxHeadDim);
}

// q (B, N, d), k (B, M, d), v (B, M, dv); max_* are the profile's upper bounds where dims are dynamic.
const char* shape_problem(const Dims& q, const Dims& k, const Dims& v, const Dims& max_q, const Dims& max_v) {
  if (q.nbDims != 3 || k.nbDims != 3 || v.nbDims != 3) {
    return "q, k and v must be rank 3: (B, N, d), (B, M, d), (B, M, dv)";
  }
  if (!same_or_unknown(q.d[0], k.d[0]) || !same_or_unknown(q.d[0], v.d[0]) || !same_or_unknown(k.d[0], v.d[0])) {
    return "q, k and v must share the batch size B";
  }
  if (!same_or_unknown(q.d[2], k.d[2])) {
    return "q and k must share the head dim d";
  }
  if (!same_or_unknown(k.d[1], v.d[1])) {
    return "k and v must share the number of keys M";
  }
  if (!head_dim_ok(q.d[2], max_q.nbDims == 3 ? max_q.d[2] : -1) ||
      !head_dim_ok(v.d[2], max_v.nbDims == 3 ? max_v.d[2] : -1)) {
    return "head dims d and dv must be in [1, 256]";
  }
  return nullptr;
}

bool fits_int(int64_t x) { return x >= 0 && x <= std::numeric_limits<int>::max(); }

}  // namespace

TstAttentionPlugin::TstAttentionPlugin(float scale) : mScale(scale) {}

TstAttentionPlugin::TstAttentionPlugin(const TstAttentionPlugin& other)
    : nvinfer1::IPluginV3(other),
      nvinfer1::IPluginV3OneCore(other),
      nvinfer1::IPluginV3OneBuild(other),
      nvinfer1::IPluginV3OneRuntime(other),
      mScale(other.mScale) {}

nvinfer1::IPluginCapability* TstAttentionPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE:
      return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD:
      return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME:
      return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

nvinfer1::IPluginV3* TstAttentionPlugin::clone() noexcept {
  try {
    return new TstAttentionPlugin(*this);
  } catch (const std::exception& e) {
    log_error(e.what());
  }
  return nullptr;
}

const char* TstAttentionPlugin::getPluginName() const noexcept { return kPluginName; }
const char* TstAttentionPlugin::getPluginVersion() const noexcept { return kPluginVersion; }
const char* TstAttentionPlugin::getPluginNamespace() const noexcept { return kPluginNamespace; }

int32_t TstAttentionPlugin::getNbOutputs() const noexcept { return kNbOutputs; }

int32_t TstAttentionPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, const DataType* inputTypes,
                                               int32_t nbInputs) const noexcept {
  if (nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
    log_error("expects 3 inputs (q, k, v) and 1 output");
    return -1;
  }
  if (!supported_type(inputTypes[kQuery]) || inputTypes[kKey] != inputTypes[kQuery] ||
      inputTypes[kValue] != inputTypes[kQuery]) {
    log_error("q, k and v must all be float32 or all be float16");
    return -1;
  }
  outputTypes[0] = inputTypes[kQuery];
  return 0;
}

int32_t TstAttentionPlugin::getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs,
                                            const nvinfer1::DimsExprs* /*shapeInputs*/, int32_t /*nbShapeInputs*/,
                                            nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                                            nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept {
  if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || inputs[kQuery].nbDims != 3 ||
      inputs[kValue].nbDims != 3) {
    log_error("expects q (B, N, d), k (B, M, d), v (B, M, dv) and one output");
    return -1;
  }
  outputs[0].nbDims = 3;
  outputs[0].d[0] = inputs[kQuery].d[0];
  outputs[0].d[1] = inputs[kQuery].d[1];
  outputs[0].d[2] = inputs[kValue].d[2];
  return 0;
}

bool TstAttentionPlugin::supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut,
                                                   int32_t nbInputs, int32_t nbOutputs) noexcept {
  if (pos < 0 || pos >= nbInputs + nbOutputs) {
    return false;
  }
  const nvinfer1::PluginTensorDesc& desc = inOut[pos].desc;
  return desc.format == nvinfer1::TensorFormat::kLINEAR && supported_type(desc.type) &&
         (pos == 0 || desc.type == inOut[0].desc.type);
}

int32_t TstAttentionPlugin::configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                                            const nvinfer1::DynamicPluginTensorDesc* /*out*/,
                                            int32_t nbOutputs) noexcept {
  if (nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
    log_error("expects 3 inputs (q, k, v) and 1 output");
    return -1;
  }
  if (const char* problem = shape_problem(in[kQuery].desc.dims, in[kKey].desc.dims, in[kValue].desc.dims,
                                          in[kQuery].max, in[kValue].max)) {
    log_error(problem);
    return -1;
  }
  return 0;
}

size_t TstAttentionPlugin::getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* /*inputs*/,
                                            int32_t /*nbInputs*/,
                                            const nvinfer1::DynamicPluginTensorDesc* /*outputs*/,
                                            int32_t /*nbOutputs*/) const noexcept {
  return 0;  // The online softmax keeps everything in registers and shared memory.
}

int32_t TstAttentionPlugin::onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs,
                                          const nvinfer1::PluginTensorDesc* /*out*/, int32_t nbOutputs) noexcept {
  if (nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
    log_error("expects 3 inputs (q, k, v) and 1 output");
    return -1;
  }
  if (const char* problem = shape_problem(in[kQuery].dims, in[kKey].dims, in[kValue].dims, in[kQuery].dims,
                                          in[kValue].dims)) {
    log_error(problem);
    return -1;
  }
  return 0;
}

int32_t TstAttentionPlugin::enqueue(const nvinfer1::PluginTensorDesc* inputDesc,
                                    const nvinfer1::PluginTensorDesc* /*outputDesc*/, const void* const* inputs,
                                    void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept {
  const Dims& q = inputDesc[kQuery].dims;
  const Dims& k = inputDesc[kKey].dims;
  const Dims& v = inputDesc[kValue].dims;
  if (!fits_int(q.d[0]) || !fits_int(q.d[1]) || !fits_int(k.d[1]) || !fits_int(q.d[2]) || !fits_int(v.d[2])) {
    log_error("tensor extents exceed the kernel's 32-bit indexing");
    return -1;
  }
  const int dtype = inputDesc[kQuery].type == DataType::kHALF ? TST_ATTENTION_FLOAT16 : TST_ATTENTION_FLOAT32;
  const int status = tst_attention_forward(inputs[kQuery], inputs[kKey], inputs[kValue], outputs[0],
                                           static_cast<int>(q.d[0]), static_cast<int>(q.d[1]),
                                           static_cast<int>(k.d[1]), static_cast<int>(q.d[2]),
                                           static_cast<int>(v.d[2]), mScale, dtype, stream);
  if (status != TST_ATTENTION_OK) {
    log_error(tst_attention_status_string(status));
    return -1;
  }
  return 0;
}

nvinfer1::IPluginV3* TstAttentionPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept {
  return clone();  // No per-context resources: no handles, no workspace.
}

const nvinfer1::PluginFieldCollection* TstAttentionPlugin::getFieldsToSerialize() noexcept {
  try {
    mSerializedFields.clear();
    mSerializedFields.emplace_back(kScaleField, &mScale, nvinfer1::PluginFieldType::kFLOAT32, 1);
    mSerializedCollection.nbFields = static_cast<int32_t>(mSerializedFields.size());
    mSerializedCollection.fields = mSerializedFields.data();
    return &mSerializedCollection;
  } catch (const std::exception& e) {
    log_error(e.what());
  }
  return nullptr;
}

TstAttentionPluginCreator::TstAttentionPluginCreator() {
  mFields.emplace_back(kScaleField, nullptr, nvinfer1::PluginFieldType::kFLOAT32, 1);
  mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
  mFieldCollection.fields = mFields.data();
}

const char* TstAttentionPluginCreator::getPluginName() const noexcept { return kPluginName; }
const char* TstAttentionPluginCreator::getPluginVersion() const noexcept { return kPluginVersion; }
const char* TstAttentionPluginCreator::getPluginNamespace() const noexcept { return kPluginNamespace; }

const nvinfer1::PluginFieldCollection* TstAttentionPluginCreator::getFieldNames() noexcept {
  return &mFieldCollection;
}

nvinfer1::IPluginV3* TstAttentionPluginCreator::createPlugin(const char* /*name*/,
                                                             const nvinfer1::PluginFieldCollection* fc,
                                                             nvinfer1::TensorRTPhase /*phase*/) noexcept {
  try {
    bool have_scale = false;
    float scale = 0.0f;
    // Unknown fields are ignored: the ONNX parser may pass along attributes it does not consume itself.
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
      const nvinfer1::PluginField& field = fc->fields[i];
      if (field.name == nullptr || std::strcmp(field.name, kScaleField) != 0 || field.data == nullptr ||
          field.length < 1) {
        continue;
      }
      if (field.type == nvinfer1::PluginFieldType::kFLOAT32) {
        scale = *static_cast<const float*>(field.data);
      } else if (field.type == nvinfer1::PluginFieldType::kFLOAT64) {
        scale = static_cast<float>(*static_cast<const double*>(field.data));
      } else {
        log_error("field 'scale' must be kFLOAT32");
        return nullptr;
      }
      have_scale = true;
    }
    if (!have_scale || !std::isfinite(scale)) {
      log_error("needs a finite float field 'scale' (the ONNX attribute scale)");
      return nullptr;
    }
    return new TstAttentionPlugin(scale);
  } catch (const std::exception& e) {
    log_error(e.what());
  }
  return nullptr;
}

}  // namespace spgim::tst

// The macro pastes its argument into an identifier, so it needs an unqualified name at global scope.
using spgim::tst::TstAttentionPluginCreator;
REGISTER_TENSORRT_PLUGIN(TstAttentionPluginCreator);
