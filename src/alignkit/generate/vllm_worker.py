"""What alignkit adds to vLLM's GPU worker so that a trainer can push its weights into a running engine.

vLLM mixes the class named by the engine argument ``worker_extension_cls`` into its worker class; the
methods below then run **inside the worker** when :meth:`vllm.LLM.collective_rpc` names them, with
``self.model_runner.model`` the worker's ``nn.Module`` (the same access vLLM's own RLHF examples use,
``examples/offline_inference/rlhf_utils.py``). The module imports nothing from vLLM, so importing it
never needs the package; :class:`alignkit.generate.engine.VLLMEngine` passes its dotted name.
"""

from __future__ import annotations

WORKER_EXTENSION = "alignkit.generate.vllm_worker.WeightSyncExtension"
"""The dotted name :class:`~alignkit.generate.engine.VLLMEngine` passes as ``worker_extension_cls``."""


class WeightSyncExtension:
    """Mixed into vLLM's worker: receives Hugging-Face-named tensors and copies them into the model."""

    def alignkit_load_weights(self, weights: list) -> list[str]:
        """Copy ``weights`` (``[(hf_name, tensor)]``) into the worker's model in place; return the names of
        the model's parameters that were **not** written (empty when every parameter was).

        The model's own ``load_weights`` maps checkpoint names onto its fused parameters (q/k/v into
        ``qkv_proj``, gate/up into ``gate_up_proj``) and casts to the engine's dtype; copying in place keeps
        the buffers CUDA graphs captured. Versions whose ``load_weights`` returns nothing are not checked
        (an empty list)."""
        model = self.model_runner.model
        loaded = model.load_weights(weights=weights)
        if loaded is None:
            return []
        return sorted({name for name, _ in model.named_parameters()} - set(loaded))
