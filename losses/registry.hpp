// Losses by name (docs/losses.md): make("cross_entropy", {.label_smoothing = 0.1}) or
// parse("cross_entropy(label_smoothing=0.1)"), so a training program takes its loss from a
// command line or a config file. Registering a loss of your own is one call.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "losses/loss.hpp"

namespace spool::losses {

/// Every loss's options in one aggregate; each loss reads its own fields (listed per field).
struct LossOptions {
    Tensor weight = {};                ///< cross_entropy, nll_loss: class weights [C]; bce: element weights
    std::int64_t ignore_index = -100;  ///< cross_entropy, nll_loss, focal_loss, z_loss, attention_alignment
    Reduction reduction = Reduction::mean;
    double label_smoothing = 0.0;      ///< cross_entropy; label_smoothing_kl's smoothing
    std::int64_t padding_idx = 0;      ///< label_smoothing_kl
    bool log_target = false;           ///< kl_div
    Tensor pos_weight = {};            ///< binary_cross_entropy_with_logits
    double gamma = 2.0;                ///< focal_loss
    Tensor alpha = {};                 ///< focal_loss
    double coefficient = 1e-4;         ///< z_loss
    AlignmentForm form = AlignmentForm::ce;  ///< attention_alignment
    std::int64_t head = -1;            ///< attention_alignment
    double eps = 1e-12;                ///< attention_alignment
};

/// Builds a loss from options.
using LossFactory = std::function<std::unique_ptr<Loss>(const LossOptions&)>;

/// The loss registered as name; throws ValueError listing the registered names.
std::unique_ptr<Loss> make(std::string_view name, const LossOptions& options = {});

/// The loss described by text: "name" or "name(key=value, ...)", e.g.
/// "cross_entropy(label_smoothing=0.1, ignore_index=0)". Keys are LossOptions' non-tensor
/// fields; a key the loss does not read is an error (a typo should not pass silently).
std::unique_ptr<Loss> parse(std::string_view spec);

/// Register a loss under name. keys lists the LossOptions fields it reads, which parse()
/// accepts for it (empty: any). Throws ValueError when the name is taken.
void register_loss(std::string_view name, LossFactory factory, std::vector<std::string> keys = {});

/// Every registered name, sorted.
std::vector<std::string> registered_names();

}  // namespace spool::losses
