/// @file parameter_store.hpp
/// @brief ParameterStore: every trainable tensor registered by name, in checkpoint order, then laid
///        out in ONE flat float buffer of values and one of gradients (same layout), 64-byte aligned
///        per tensor; default_no_decay(), the weight-decay rule.
///
/// Lifecycle: add() every parameter (name, shape, group index, decay flag) in the order a checkpoint
/// lists them, then freeze(), which fixes the layout and allocates both buffers, zeroed. After that
/// tensors are reached as views (view<R>(i), grad_view<R>(i), or by name), never copied; nothing is
/// added or removed.
///
/// Layout: tensor i occupies [offset_i, offset_i + numel_i) of each buffer; offset_i is a multiple of
/// 16 floats (kHostAlignment bytes, one cache line / AVX-512 register) and the buffers themselves are
/// 64-byte aligned, so every tensor starts on a cache line. The padding between tensors is zero and
/// stays zero (nothing but zero_grad() and whole-buffer ops touch it, and a sum, a scale or an
/// all-reduce of zeros is zero).
///
/// Whole-buffer operations: values() and grads() are the complete buffers, padding included, so
/// anything that acts on all gradients at once (zero_grad, the global gradient norm, clipping, and a
/// future data-parallel all-reduce: one NCCL/MPI call on grads().data() for grads().size(0) floats,
/// no packing) is one contiguous pass. The optimiser's moment buffers (train/optimizer.hpp) use the
/// same layout, so a training-state checkpoint is three buffers and a step count.
///
/// Gradient contract (CONVENTIONS.md §6): backward passes accumulate parameter gradients with `+=`
/// into grad_view(i); call zero_grad() before each accumulation window.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "qlip/core/allocator.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::train {

/// Elements between aligned tensor starts: kHostAlignment bytes of floats.
inline constexpr std::int64_t kParameterAlignment = static_cast<std::int64_t>(kHostAlignment / sizeof(float));

/// Whether a store allocates gradient buffers (training) or values only (inference).
enum class Gradients : std::uint8_t { allocate, none };

/// The default weight-decay rule: no decay on rank ≤ 1 tensors (norm gains, biases, scalars such as
/// logit_scale), on embeddings (names containing "embedding" or "embed_tokens": token, position and
/// class embeddings) and on "logit_scale". Note that this also exempts the vision tower's
/// "patch_embedding.weight" (a conv kernel; EVA/timm decay it): register it with an explicit decay
/// flag if that is wanted. "quant_embed" (the BSQ MLPs) does not match and is decayed.
/// @param name the parameter's checkpoint name
/// @param rank its number of dimensions (0 for a scalar)
/// @return true when the tensor gets no weight decay
inline bool default_no_decay(std::string_view name, std::size_t rank) {
  return rank <= 1 || name.find("embedding") != std::string_view::npos ||
         name.find("embed_tokens") != std::string_view::npos || name.find("logit_scale") != std::string_view::npos;
}

/// What the store knows about one tensor.
struct ParameterInfo {
  std::string name;
  std::vector<std::int64_t> shape;  ///< empty for a 0-dim (scalar) tensor
  int group = 0;                    ///< index into the optimiser's parameter groups
  bool decay = true;                ///< weight decay applies
  std::int64_t offset = 0;          ///< first element in values()/grads() (set by freeze())
  std::int64_t numel = 0;           ///< product of the shape (1 for a scalar)
};

/// Trainable parameters in one flat value buffer and one flat gradient buffer (file comment).
class ParameterStore {
 public:
  ParameterStore() = default;
  ParameterStore(const ParameterStore&) = delete;  // views into the buffers would silently alias
  ParameterStore& operator=(const ParameterStore&) = delete;
  ParameterStore(ParameterStore&&) = default;
  ParameterStore& operator=(ParameterStore&&) = default;

  /// Registers a tensor; the index it returns is its position in checkpoint order.
  /// @param name  unique, non-empty checkpoint name
  /// @param shape extents, each ≥ 1 (an empty shape is a scalar)
  /// @param group parameter-group index (≥ 0; the optimiser checks it against its groups)
  /// @param decay whether weight decay applies
  /// @throws qlip::Error after freeze(), on a duplicate or empty name, a zero-sized or negative
  ///         extent, or a negative group, naming the tensor
  int add(std::string name, std::vector<std::int64_t> shape, int group, bool decay) {
    QLIP_CHECK(!frozen_, "ParameterStore: cannot add '", name,
               "': the store is frozen (add every parameter before freeze())");
    QLIP_CHECK(!name.empty(), "ParameterStore: parameter #", infos_.size(), " has an empty name");
    if (auto it = by_name_.find(name); it != by_name_.end())
      QLIP_THROW("ParameterStore: duplicate parameter name '", name, "' (already registered as #", it->second, ")");
    std::int64_t numel = 1;
    for (std::int64_t e : shape) {
      QLIP_CHECK(e >= 1, "ParameterStore: parameter '", name, "' has shape ", shape_text(shape),
                 ": every extent must be ≥ 1 (zero-sized tensors are not allowed)");
      numel *= e;
    }
    QLIP_CHECK(group >= 0, "ParameterStore: parameter '", name, "' has group ", group, ", expected ≥ 0");
    const int index = static_cast<int>(infos_.size());
    by_name_.emplace(name, index);
    infos_.push_back(ParameterInfo{std::move(name), std::move(shape), group, decay, 0, numel});
    return index;
  }

  /// add() with the decay flag from default_no_decay(name, rank).
  int add(std::string name, std::vector<std::int64_t> shape, int group = 0) {
    const bool decay = !default_no_decay(name, shape.size());
    return add(std::move(name), std::move(shape), group, decay);
  }

  /// Fixes the layout (registration order, each tensor at a multiple of kParameterAlignment) and
  /// allocates the value and gradient buffers, zero-filled. Gradients::none allocates values only
  /// (inference: a 1B-parameter model then needs 4 GB, not 8): every gradient view is then empty,
  /// which modules read as "frozen".
  /// @throws qlip::Error when already frozen or when nothing was registered
  void freeze(Gradients gradients = Gradients::allocate) {
    QLIP_CHECK(!frozen_, "ParameterStore: freeze() called twice");
    QLIP_CHECK(!infos_.empty(), "ParameterStore: freeze() with no parameters registered");
    std::int64_t offset = 0;
    for (ParameterInfo& info : infos_) {
      info.offset = offset;
      offset += (info.numel + kParameterAlignment - 1) / kParameterAlignment * kParameterAlignment;
    }
    total_ = offset;
    values_ = AlignedBuffer<float>(total_, true);
    if (gradients == Gradients::allocate) grads_ = AlignedBuffer<float>(total_, true);
    has_grads_ = gradients == Gradients::allocate;
    frozen_ = true;
  }

  /// False for a store frozen with Gradients::none.
  bool has_gradients() const { return has_grads_; }
  /// Frozen without gradients: every gradient view is empty (before freeze() they throw).
  bool values_only() const { return frozen_ && !has_grads_; }

  bool frozen() const { return frozen_; }
  /// Number of registered tensors.
  int size() const { return static_cast<int>(infos_.size()); }
  /// Length of each flat buffer, padding included (valid after freeze()).
  std::int64_t buffer_size() const { return total_; }
  /// Σ numel over the tensors (what a checkpoint stores).
  std::int64_t parameter_count() const {
    std::int64_t n = 0;
    for (const ParameterInfo& info : infos_) n += info.numel;
    return n;
  }

  /// The tensor's description. @throws qlip::Error when the index is out of range
  const ParameterInfo& info(int index) const {
    QLIP_CHECK(index >= 0 && index < size(), "ParameterStore: parameter index ", index, " out of range (", size(),
               " registered)");
    return infos_[static_cast<std::size_t>(index)];
  }
  const std::vector<ParameterInfo>& infos() const { return infos_; }

  bool contains(std::string_view name) const { return by_name_.find(name) != by_name_.end(); }
  /// Index of a tensor by name. @throws qlip::Error naming the missing name
  int index_of(std::string_view name) const {
    auto it = by_name_.find(name);
    if (it == by_name_.end())
      QLIP_THROW("ParameterStore: no parameter named '", std::string(name), "' (", size(), " registered)");
    return it->second;
  }

  /// The tensor's values as a rank-R view of its shape (a scalar is viewed with R = 1 as [1]).
  /// @throws qlip::Error before freeze() or when R is not the tensor's rank, naming the tensor
  template <int R>
  HostView<float, R> view(int index) {
    return shaped<R>(index, values_.data(), "view");
  }
  template <int R>
  HostView<const float, R> view(int index) const {
    return shaped<R>(index, values_.data(), "view");
  }
  template <int R>
  HostView<float, R> view(std::string_view name) {
    return view<R>(index_of(name));
  }
  /// The tensor's gradient, laid out like view<R>(index); empty in a store without gradients.
  template <int R>
  HostView<float, R> grad_view(int index) {
    return values_only() ? HostView<float, R>() : shaped<R>(index, grads_.data(), "grad_view");
  }
  template <int R>
  HostView<const float, R> grad_view(int index) const {
    return values_only() ? HostView<const float, R>() : shaped<R>(index, grads_.data(), "grad_view");
  }
  template <int R>
  HostView<float, R> grad_view(std::string_view name) {
    return grad_view<R>(index_of(name));
  }

  /// The tensor's values / gradient as a flat [numel] view, whatever its rank.
  HostView<float, 1> flat_view(int index) { return flat(index, values_.data(), "flat_view"); }
  HostView<float, 1> flat_grad_view(int index) {
    return values_only() ? HostView<float, 1>() : flat(index, grads_.data(), "flat_grad_view");
  }

  /// The whole value buffer [buffer_size()], padding included. @throws qlip::Error before freeze()
  HostView<float, 1> values() { return whole(values_.data(), "values"); }
  HostView<const float, 1> values() const { return whole(values_.data(), "values"); }
  /// The whole gradient buffer [buffer_size()], padding included: the unit of a data-parallel
  /// all-reduce, of the global norm and of clipping. @throws qlip::Error before freeze()
  HostView<float, 1> grads() { return values_only() ? HostView<float, 1>() : whole(grads_.data(), "grads"); }
  HostView<const float, 1> grads() const {
    return values_only() ? HostView<const float, 1>() : whole(grads_.data(), "grads");
  }

  /// Sets every gradient (and the padding) to zero.
  void zero_grad() {
    QLIP_CHECK(frozen_, "ParameterStore: zero_grad() before freeze()");
    if (has_grads_) std::memset(grads_.data(), 0, static_cast<std::size_t>(total_) * sizeof(float));
  }

  /// Calls f(name, shape, value, grad) for every tensor in checkpoint order, with
  /// name: const std::string&, shape: std::span<const std::int64_t>, value and grad: flat
  /// HostView<float, 1> of numel elements.
  /// @tparam F callable with that signature
  template <class F>
  void visit(F&& f) {
    for (int i = 0; i < size(); ++i) {
      const ParameterInfo& info = infos_[static_cast<std::size_t>(i)];
      f(info.name, std::span<const std::int64_t>(info.shape), flat_view(i), flat_grad_view(i));
    }
  }

 private:
  static std::string shape_text(const std::vector<std::int64_t>& shape) {
    std::string s = "[";
    for (std::size_t d = 0; d < shape.size(); ++d) s += (d ? ", " : "") + std::to_string(shape[d]);
    return s + "]";
  }

  // T is float or const float: the const accessors pass the buffers' const pointers.
  template <class T>
  HostView<T, 1> whole(T* base, const char* what) const {
    QLIP_CHECK(frozen_, "ParameterStore: ", what, "() before freeze()");
    return HostView<T, 1>(base, {total_});
  }

  template <class T>
  HostView<T, 1> flat(int index, T* base, const char* what) const {
    const ParameterInfo& i = info(index);
    QLIP_CHECK(frozen_, "ParameterStore: ", what, " of '", i.name, "' before freeze()");
    return HostView<T, 1>(base + i.offset, {i.numel});
  }

  template <int R, class T>
  HostView<T, R> shaped(int index, T* base, const char* what) const {
    const ParameterInfo& i = info(index);
    QLIP_CHECK(frozen_, "ParameterStore: ", what, " of '", i.name, "' before freeze()");
    const std::size_t rank = i.shape.size();
    QLIP_CHECK(rank == static_cast<std::size_t>(R) || (rank == 0 && R == 1), "ParameterStore: ", what, "<", R, "> of '",
               i.name, "', which has rank ", rank, " (shape ", shape_text(i.shape), ")");
    Extents<R> shape{};
    shape.fill(1);
    for (std::size_t d = 0; d < rank; ++d) shape[d] = i.shape[d];
    return HostView<T, R>(base + i.offset, shape);
  }

  std::vector<ParameterInfo> infos_;
  std::map<std::string, int, std::less<>> by_name_;  // transparent: lookup by string_view
  bool frozen_ = false;
  bool has_grads_ = false;
  std::int64_t total_ = 0;
  AlignedBuffer<float> values_;
  AlignedBuffer<float> grads_;
};

/// Registers every parameter of `module` in `store` (visit order), freezes the store and binds the
/// module's parameters to it. place(name, rank) gives the parameter's {group, weight decay}.
/// Gradients::none binds values only (every gradient view empty: the module is frozen).
template <class Module, class Place>
void bind_parameters(Module& module, ParameterStore& store, Place&& place,
                     Gradients gradients = Gradients::allocate) {
  module.visit_parameters([&](const std::string& name, auto& p) {
    const std::vector<std::int64_t> shape(p.shape.begin(), p.shape.end());
    const auto [group, decay] = place(name, shape.size());
    store.add(name, shape, group, decay);
  });
  store.freeze(gradients);
  module.visit_parameters([&](const std::string& name, auto& p) {
    constexpr int R = static_cast<int>(std::tuple_size_v<decltype(p.shape)>);
    const int i = store.index_of(name);
    p.value = store.template view<R>(i);
    p.grad = store.template grad_view<R>(i);
  });
}

}  // namespace qlip::train
