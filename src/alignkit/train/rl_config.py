"""The ``alignkit rl`` config: one strict section per concern, and the refused combinations.

Defaults follow common practice (InstructGPT / ChatGLM-RLHF PPO: KL in the reward, k1; GRPO: set
``kl.mode: loss``, whose estimator defaults to k3); each field's docstring becomes ``alignkit rl --help``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from alignkit.config import StrictModel
from alignkit.judge.client import JudgeConfig
from alignkit.train.loop import TrainConfig
from alignkit.train.run import ModelConfig


class RLDataConfig(StrictModel):
    """Prompt rows: ``{"prompt": str | [messages], ...}``; other keys go to the reward (e.g. IFEval's ``instruction_id_list`` and ``kwargs``)."""

    train: str
    """Training prompts (JSONL)."""
    eval: str | None = None
    """Held-out prompts, answered greedily before and after training and scored with the reward."""
    eval_max_new_tokens: int = 64
    """Token budget of the held-out greedy answers."""


class RolloutConfig(StrictModel):
    """Sampling from the current policy."""

    backend: Literal["hf", "vllm"] = "hf"
    """hf: the shared HF engine on the policy's own weights (exact, nothing to copy). vllm: one in-process
    vLLM engine on the policy's GPU that receives the current policy weights before every generation
    (needs the vllm package and a CUDA GPU, one training process, no LoRA; refused otherwise)."""
    prompts_per_step: int = Field(default=8, ge=1)
    """Prompts per RL step over all processes (must divide by the process count)."""
    n: int = Field(default=4, ge=1)
    """Samples per prompt (grpo / rloo need >= 2)."""
    max_new_tokens: int = Field(default=64, ge=1)
    """Token budget of a sample; a sample cut by it is 'length'-finished (the verifier fails it)."""
    temperature: float = 1.0
    """Sampling temperature; the training log-probs use the same temperature (> 0)."""
    top_p: float = 1.0
    """Nucleus sampling (1.0: off). Below 1 the samples no longer follow the policy whose log-probs are trained."""
    top_k: int = 0
    """Top-k sampling (0: off); same caveat as top_p."""
    batch_size: int = Field(default=16, ge=1)
    """Sequences the engine decodes together."""
    vllm_gpu_memory_utilization: float = Field(default=0.3, gt=0.0, le=1.0)
    """vllm: share of the GPU's memory the engine may take (weights, activations, KV cache); the policy,
    reference, critic and optimizer states need the rest. vLLM refuses to start when less is free."""
    vllm_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    """vllm: the engine's dtype; the synced policy weights are cast to it (the update recomputes
    log-probs in the trainer's precision, so this only changes which samples are drawn)."""


class AdvantageConfig(StrictModel):
    """How a sample's reward becomes per-token advantages."""

    type: Literal["gae", "grpo", "rloo"] = "gae"
    """gae: critic + GAE (PPO); grpo: (r - group mean) / group std; rloo: r - mean of the other samples."""
    gamma: float = 1.0
    """gae: discount."""
    lam: float = 0.95
    """gae: GAE lambda."""
    whiten: bool = True
    """gae: normalise advantages to mean 0, std 1 over the step (all processes)."""
    scale_std: bool = True
    """grpo: divide by the group std (false: Dr. GRPO, centring only)."""


class KLConfig(StrictModel):
    """KL regularisation towards the reference policy."""

    coef: float = Field(default=0.05, ge=0.0)
    """beta. 0 disables the penalty (KL is still measured)."""
    mode: Literal["reward", "loss"] = "reward"
    """reward: -beta * k1 per token in the reward (InstructGPT / ChatGLM-RLHF); loss: beta * estimator as a loss term (GRPO)."""
    estimator: Literal["k1", "k2", "k3"] | None = None
    """null: k3 for mode=loss (GRPO's; its gradient descends KL(ref || pi) per token), k1 for mode=reward (the
    in-reward penalty is always k1). mode=loss also takes k2 (descends KL(pi || ref) per token); k1 as a loss is
    refused: its expected gradient on-policy is zero. See docs/rl.md, "Which KL the gradient descends"."""

    @model_validator(mode="after")
    def _estimator_of_the_mode(self) -> KLConfig:
        if self.estimator is None:
            self.estimator = "k3" if self.mode == "loss" else "k1"
        elif self.mode == "loss" and self.estimator == "k1":
            raise ValueError("kl.mode=loss with kl.estimator=k1 has zero expected gradient on-policy "
                             "(E_pi[grad log pi] = 0): it regularises nothing; use k3 (the default) or k2")
        elif self.mode == "reward" and self.estimator != "k1":
            raise ValueError(f"kl.estimator={self.estimator} is only used by kl.mode=loss; the in-reward penalty is "
                             "k1 (its policy gradient descends KL(pi || ref)); drop kl.estimator or set kl.mode=loss")
        return self


class RewardConfig(StrictModel):
    """Where rewards come from, and ChatGLM-RLHF's reward stabilisers."""

    type: Literal["verifier", "model", "judge", "remote", "sum"] = "verifier"
    """verifier | model (an `alignkit rm` dir) | judge | remote (an `alignkit serve --reward-model` server) |
    sum (weighted, see weights)."""
    verifier: str = "verifiable"
    """'verifiable' (IFEval rows, 1 when every instruction is followed, strict), 'ifeval[:fraction|all][:strict|loose]'
    (IFEval rows: the fraction of instructions followed, strict by default; a cut response scores 0) or
    'package.module:function(row, text, finish_reason)'."""
    model: str | None = None
    """Reward-model checkpoint directory (type model, or a 'model' weight)."""
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    """The judge (type judge): rating 0-10 from judge/prompts/rl_reward.en.txt, divided by 10."""
    judge_max_tokens: int = 256
    """Tokens the judge may write (analysis + rating)."""
    remote_url: str | None = None
    """Base address of an `alignkit serve --reward-model DIR` server (type remote, or a 'remote' weight)."""
    remote_api_key_env: str = "ALIGNKIT_REWARD_API_KEY"
    """Environment variable holding the server's Bearer token (unset or empty: no token is sent)."""
    weights: dict[str, float] = Field(default_factory=dict)
    """type sum: weight per component, keys among verifier, model, judge, remote."""
    max_failure_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    """Stop with a diagnostic when more than this fraction of a step's samples have no reward."""
    reference_baseline: bool = False
    """Subtract r(x, y_ref), y_ref = the reference policy's greedy answer (once per prompt, cached; a failed
    r(x, y_ref) masks the prompt's samples of that step and is computed again the next time the prompt comes)."""
    normalize: bool = True
    """Running reward normalisation (r - mean) / std over all rewards seen so far."""
    clip: float | None = 5.0
    """Clip normalised rewards to [-clip, clip] (null: no clipping)."""
    std_floor: float = Field(default=0.01, gt=0.0)
    """normalize: the running std is floored at this value (reward units) before dividing, so a run whose
    rewards so far are all equal (std 0) scales them by at most 1/std_floor instead of 1e8. For rewards in
    [0, 1] (verifier, judge) a std below 0.01 means fewer than 1 in 10,000 rewards differ from the rest."""


class CriticConfig(StrictModel):
    """The value model (gae only)."""

    init: Literal["policy", "reward_model"] = "policy"
    """policy: the policy's backbone + a fresh value head; reward_model: an rm checkpoint's backbone and score head."""
    name_or_path: str | None = None
    """Weights to start from (null: the policy's path, or reward.model for init=reward_model)."""
    lr: float = 1e-5
    """Critic peak learning rate (same schedule and AdamW settings as the policy)."""
    value_clip: float | None = 0.2
    """Clip the value update to +-value_clip around the rollout values (null: plain squared error)."""


class PPOConfig(StrictModel):
    """The policy (and critic) update on one rollout batch."""

    epochs: int = Field(default=1, ge=1)
    """Passes over the rollout batch."""
    num_minibatches: int = Field(default=1, ge=1)
    """Optimizer steps per epoch (the local batch must divide by it)."""
    micro_batch_size: int = Field(default=4, ge=1)
    """Sequences per forward/backward (gradient accumulation inside a minibatch)."""
    clip_eps: float = 0.2
    """Surrogate clipping epsilon."""
    entropy_coef: float = 0.0
    """Entropy bonus weight (0: entropy is only logged)."""
    loss_reduction: Literal["token", "sequence"] = "token"
    """token: sum / tokens of the minibatch; sequence: per-sequence token mean, sum / sequences."""


class CorrectionConfig(StrictModel):
    """Importance-sampling correction of the engine's sampling distribution mu vs the trainer's pi_old.

    mu is the behaviour policy as the rollout engine reports it. ``correction: tis`` is short for
    ``correction.type: tis``. The mismatch metrics (mismatch/kl, mismatch/is_weight_mean,
    mismatch/clipped_frac) are logged whatever the type."""

    type: Literal["none", "tis", "mis"] = "none"
    """none: train as if mu == pi_old; tis: truncated IS, each token's policy-gradient term weighted by
    min(pi_old / mu, cap); mis: masked IS, a sample whose geometric-mean ratio exp(mean_t log(pi_old / mu))
    leaves [1/cap, cap] is left out of the update (their share: mismatch/clipped_frac). See docs/rl.md."""
    cap: float = Field(default=2.0, gt=1.0)
    """C: the truncation (tis) or acceptance bound (mis). 2.0 is verl's and TRL's default."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value):
        return {"type": value} if isinstance(value, str) else value


class PTXConfig(StrictModel):
    """Next-token-prediction loss on SFT rows against forgetting (InstructGPT's PPO-ptx, ChatGLM-RLHF)."""

    data: str | None = None
    """SFT rows (`alignkit sft` format)."""
    coef: float = Field(default=0.0, ge=0.0)
    """gamma: weight of the token-mean NLL added at every optimizer step."""
    batch_size: int = Field(default=4, ge=1)
    """SFT rows per optimizer step per process."""


class RLTrainConfig(TrainConfig):
    """Optimisation and bookkeeping of the RL run: the offline recipes' ``train`` section, with RL's defaults.

    Same fields, same meaning (optimizer, scheduler, clipping, checkpoints, trackers and signals are the shared
    loop's), the length in RL steps; ``eval_every`` is the cadence of ``train.eval``. The offline data-loop fields
    (epochs, batch_size, grad_accum) do not apply (RL's batch is ``rollout`` x ``ppo``): refused when set, left out
    of the saved config."""

    output_dir: str = "runs/rl"
    """Where checkpoints, logs, the report, the resolved config and the final model go."""
    max_steps: int = Field(default=10, ge=1)
    """RL steps (rollout + update)."""
    lr: float = 1e-6
    """Policy peak learning rate (AdamW; the critic's is critic.lr)."""
    schedule: Literal["cosine", "linear", "constant"] = "constant"
    """Learning-rate decay over all optimizer steps (max_steps x ppo.epochs x ppo.num_minibatches)."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient norm of each model (policy, critic) to this value (null: no clipping)."""
    epochs: int | None = Field(default=None, ge=1, exclude=True)
    """Not used by alignkit rl (it runs max_steps RL steps); refused when set."""
    batch_size: int = Field(default=4, exclude=True)
    """Not used by alignkit rl (see rollout.prompts_per_step, rollout.n, ppo.micro_batch_size); refused when set."""
    grad_accum: int = Field(default=1, exclude=True)
    """Not used by alignkit rl (see ppo.num_minibatches, ppo.micro_batch_size); refused when set."""
    eval_every: int | None = None
    """Run train.eval every N RL steps (null: before and after training only); data.eval's held-out reward is
    scored before and after training. Needs train.eval."""
    report: bool = True
    """Write report.md and PNG plots at the end."""

    @model_validator(mode="after")
    def _one_length(self) -> RLTrainConfig:  # replaces TrainConfig's epochs-or-max_steps rule: RL has max_steps only
        unused = sorted(self.model_fields_set & {"epochs", "batch_size", "grad_accum"})
        if self.eval_every is not None and not self.eval:
            raise ValueError("train.eval_every sets how often alignkit rl runs train.eval, which is empty: add "
                             "train.eval items or remove train.eval_every")
        if unused:
            raise ValueError(f"train.{unused[0]} is not used by alignkit rl: an RL step is rollout.prompts_per_step x "
                             "rollout.n samples, updated in ppo.num_minibatches minibatches of ppo.micro_batch_size "
                             "sequences per forward, for train.max_steps steps; remove it")
        return self


class ReferenceSettings(StrictModel):
    """The frozen reference policy (KL and reference baseline)."""

    name_or_path: str | None = None
    """null: the policy's initial weights."""


class RLConfig(StrictModel):
    """``alignkit rl`` recipe."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    reference: ReferenceSettings = Field(default_factory=ReferenceSettings)
    data: RLDataConfig
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    advantage: AdvantageConfig = Field(default_factory=AdvantageConfig)
    kl: KLConfig = Field(default_factory=KLConfig)
    critic: CriticConfig | None = Field(default_factory=CriticConfig)
    """The value model; required by advantage.type=gae, refused (set null) for grpo / rloo."""
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    correction: CorrectionConfig = Field(default_factory=CorrectionConfig)
    ptx: PTXConfig = Field(default_factory=PTXConfig)
    train: RLTrainConfig = Field(default_factory=RLTrainConfig)

    @model_validator(mode="after")
    def _refuse_bad_combinations(self) -> RLConfig:
        adv, r = self.advantage.type, self.reward
        if adv in ("grpo", "rloo") and self.rollout.n < 2:
            raise ValueError(f"advantage.type={adv} compares the samples of a prompt: it needs rollout.n >= 2 "
                             f"(got {self.rollout.n})")
        if adv == "gae" and self.critic is None:
            raise ValueError("advantage.type=gae needs a critic (set critic.init), or use grpo / rloo")
        if adv != "gae" and self.critic is not None:
            raise ValueError(f"advantage.type={adv} uses no critic: set critic: null")
        if not self.rollout.temperature > 0:
            raise ValueError("rollout.temperature must be > 0: PPO needs samples from the policy")
        needs_model = r.type == "model" or "model" in r.weights or (
            self.critic is not None and self.critic.init == "reward_model" and self.critic.name_or_path is None)
        if needs_model and r.model is None:
            raise ValueError("reward.model (an `alignkit rm` checkpoint directory) is required here")
        if (r.type == "remote" or "remote" in r.weights) and not r.remote_url:
            raise ValueError("reward.remote_url (the address of `alignkit serve --reward-model DIR`) is required here")
        if r.type == "sum" and (not r.weights or set(r.weights) - {"verifier", "model", "judge", "remote"}):
            raise ValueError(f"reward.type=sum needs reward.weights with keys among verifier, model, judge, remote "
                             f"(got {r.weights})")
        if r.type != "sum" and r.weights:
            raise ValueError("reward.weights is only used by reward.type=sum")
        if self.rollout.backend == "vllm" and self.model.lora is not None:
            raise ValueError("rollout.backend=vllm syncs full weights into the engine; model.lora (an adapter) "
                             "is not supported with it: train without LoRA or use rollout.backend=hf")
        if self.ptx.coef > 0 and not self.ptx.data:
            raise ValueError("ptx.coef > 0 needs ptx.data (SFT rows)")
        return self
