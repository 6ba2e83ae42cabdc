#include "model/token_decode.h"

#include "subq/error.h"
#include "subq/matvec.h"

namespace subq::model {

bool token_decode_enabled() {
  static const bool on = env_switch_on("SUBQ_TOKEN_DECODE");
  return on;
}

TensorView weight_view(const at::Tensor& w, int64_t rows) {
  SUBQ_CHECK(w.dim() == 2 && w.is_contiguous() &&
                 (w.scalar_type() == torch::kFloat32 || w.scalar_type() == torch::kBFloat16),
             "token decode: expected a contiguous f32 or bf16 weight matrix");
  return TensorView(w.data_ptr(), w.scalar_type() == torch::kBFloat16 ? DType::kBF16 : DType::kF32,
                    {rows, w.size(1)});
}

void matvec_row(const at::Tensor& w, int64_t rows, const float* x, float* y) {
  const int64_t cols = w.size(1);
  matvec(weight_view(w, rows), TensorView(const_cast<float*>(x), DType::kF32, {1, cols}),
         TensorView(y, DType::kF32, {1, rows}));
}

void project_row(const ProjectionImpl& p, const float* x, float* y) {
  matvec_row(p.weight, p.weight.size(0), x, y);
  if (p.bias.defined()) {
    const float* b = p.bias.data_ptr<float>();
    for (int64_t i = 0; i < p.weight.size(0); ++i) y[i] += b[i];
  }
}

// The MLP's token step: down(silu(gate(x)) * up(x)), gate and up in one matvec when the arena
// lays them back to back.
bool MlpImpl::token_decode_ready() const {
  for (const ProjectionImpl* p : {gate_proj.get(), up_proj.get(), down_proj.get()})
    if (p->has_lora() || !p->weight.is_contiguous()) return false;
  return true;
}

void MlpImpl::decode_token(const float* x, float* y, TokenScratch& s) {
  const int64_t I = gate_proj->weight.size(0);
  s.gu.resize(static_cast<size_t>(2 * I));
  s.act.resize(static_cast<size_t>(I));
  if (adjacent_row_count({gate_proj.get(), up_proj.get()}) == 2 * I) {
    matvec_row(gate_proj->weight, 2 * I, x, s.gu.data());
  } else {
    project_row(*gate_proj, x, s.gu.data());
    project_row(*up_proj, x, s.gu.data() + I);
  }
  silu_mul_row(s.gu.data(), s.gu.data() + I, I, s.act.data());
  project_row(*down_proj, s.act.data(), y);
}

}  // namespace subq::model
