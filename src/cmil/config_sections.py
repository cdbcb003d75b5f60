"""The typed sections of a run's configuration: world model (`wm`), agent (`agent`), pixel DAC (`dac`) and
pixel BC (`bc`). `cmil.config.Config` holds one of each; every field's docstring is its `--help` text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class WorldModelConfig:
    """DreamerV2-style RSSM with Gaussian latents and an ensemble of prior heads."""

    deter: int = 200
    """Size of the GRU (deterministic) state h_t."""
    hidden: int = 200
    """Width of the hidden layers around the GRU and of each prior/posterior head."""
    stoch: int = 32
    """Size of the Gaussian stochastic state s_t."""
    ensemble: int = 5
    """K: number of prior (transition) heads; their disagreement is eq. 9's model-mismatch estimate."""
    cnn_depth: int = 16
    """Channels of the first conv layer (doubling each layer) of the encoder and decoder."""
    encoder_depth: int = 0
    """Channels of the encoder's first conv layer when it should differ from the decoder's (0 = cnn_depth, as in
    DreamerV2 and the authors' code). With wm.posterior 'image' the encoder is all the policy sees of a frame;
    at `default` sizes depth 32 makes an update 1.75x the FLOPs and ~1.3x the CPU time (docs/results.md, round 7)."""
    kl_balance: float = 0.8
    """KL balancing: weight of the prior-side term (posterior held fixed)."""
    kl_free: float = 1.0
    """Free nats: the KL loss is clamped below this value (averaged over the batch)."""
    kl_scale: float = 1.0
    """Weight of the KL term in the world-model loss."""
    overshoot_steps: int = 0
    """Latent overshooting (PlaNet): also roll the prior open loop on the recorded actions from every frame of the
    window for 2 .. this many steps and pull each k-step prediction towards the posterior of the frame it predicts
    (the balanced KL with free nats, averaged over k), times `overshoot_weight` and kl_scale. 0 or 1 = off (the
    one-step KL of DreamerV2 and the authors' code). Imagination runs the prior `agent.horizon` steps open loop,
    while the one-step KL trains it one step from a filtered state only. Measured (issue 9, round 42): on `point`'s
    world model alone it calmed the early overshoot and ended level with the one-step model (the action held five
    imagined steps: R^2 0.86 against 0.87); on push (7 steps) it did not make the imagined hand follow the action
    better, and no preset sets it."""
    overshoot_weight: float = 1.0
    """Weight of the overshooting KL (`overshoot_steps`) beside the one-step KL."""
    min_std: float = 0.1
    """Floor of the latent std: std = 2 * sigmoid(x / 2) + min_std."""
    lr: float = 3e-4
    """Adam learning rate of the world model."""
    eps: float = 1e-5
    """Adam epsilon."""
    grad_clip: float = 100.0
    """Gradient-norm clip of the world model."""
    weight_decay: float = 1e-6
    """Weight decay of the world model's optimiser."""
    augment: bool = False
    """Random-shift augmentation (pad 4, one shift per sequence) of the world model's images, input and
    reconstruction target alike; off in the authors' code."""
    recon_focus_weight: float = 0.0
    """Extra weight of the reconstruction error on the pixels `recon_focus` picks: their squared error counts
    1 + this, every other pixel's 1. 0 = the plain sum (DreamerV2, the authors' code). A small object the action
    moves (point's dot, Meta-World's puck) covers well under 1% of the frame, so under the plain sum the latent can
    leave it out: on `point` the `default` world model never draws the dot in 3,000 updates, and with 'change' at
    weight 10 it does (issue 9, round 40). On push ('both', weight 10) it changed no final result (-0.02 on fresh
    placements over three seeds), so no preset sets it."""
    recon_focus: Literal["change", "foreground", "both"] = "change"
    """Which pixels `recon_focus_weight` weights (a channel differing by more than 0.05 in [-0.5, 0.5] units):
    'change' = those that differ from the frame before or after in the window (what moves); 'foreground' = those
    that differ from the batch's per-pixel median frame (what is not the common background: moving objects, and
    still ones placed differently in each episode, such as a goal; with `augment` each window is shifted on its own,
    so edges of the background can count too); 'both' = either."""
    posterior: Literal["filter", "image"] = "filter"
    """What the posterior q(s_t | .) reads: 'filter' = h_t and the image embedding (DreamerV2, the authors'
    code); 'image' = the image embedding alone, so s_t describes the current frame and never the action
    history (h_t still integrates the past for the prior and the decoder)."""
    agent_feat: Literal["sample", "mean", "stoch"] = "sample"
    """What the agent (actor, critics, discriminator) reads of the stochastic state, beside h_t: its sample
    (DreamerV2, the authors' code) or its mean. Most of the Gaussian latent's dimensions stay close to the
    prior (posterior std ~0.7 on the default task), so a sample hands the agent mostly noise, which a policy
    fitted to ~1,000 demo frames learns to read; the mean keeps what the image told the model. 'stoch' = the
    mean alone, without h_t: with posterior 'image', the agent then reads the current frame as pixel BC does
    (and in imagination the prior's prediction of it)."""
    freeze_representation: bool = False
    """After pretraining, stop training the path from an image to the posterior (the encoder and the posterior
    layers); the dynamics, the prior heads and the decoder keep learning from the online data. Off in the
    authors' code. Issue 9, round 10: on the `long` preset a fresh actor fitted by BC to the world model's
    frozen features acts worse the later the checkpoint (docs/results.md), so the representation the actor
    reads drifts away from what BC needs as the replay fills with the policy's own states. On in the `long`
    preset (rounds 12-13: it held every `long` run measured, where training it online eroded all three)."""
    freeze_encoder: bool = False
    """Never train the image encoder: it keeps the weights `encoder_from` gave it (a trained pixel-BC encoder),
    and the posterior layers, dynamics, decoder and agent learn on top of its embedding. Off in the authors'
    code; needs `encoder_from`; the BC phase runs ~1.8x faster (the backward skips the encoder). Issue 9, round 19:
    on the tuning seeds the latent policy on pixel BC's own frozen embedding succeeded 0.44 pooled after 3,200 BC-phase
    updates against pixel BC's 0.50 on the same placements (docs/results.md): the gap is not in the encoder."""
    carry_state: bool = True
    """Start each training batch from the last posterior state of the previous one (detached), as the
    authors' code does; `is_first` still resets it at episode starts. False starts every window from zeros."""


@dataclass(frozen=True)
class AgentConfig:
    """Discriminator, reward, actor and twin critics (paper section 5)."""

    alpha: float = 10.0
    """Weight of the ensemble-disagreement penalty in the reward (eq. 10); 0 for VMAIL."""
    beta: float = 10.0
    """Weight of the behaviour-cloning term in the actor loss; 0 for VMAIL."""
    explore_noise: float = 0.0
    """Std of Gaussian noise added to the actor's sampled action at every online env step (clipped to the action
    box; evaluation acts with the mean, untouched). 0 = the actor's own sample (authors' code). Wider actions
    give the teacher's labels and the critics' real-data loss (and D, with disc_policy_pairs 'replay') states and
    actions away from the policy's narrow ~0.12 std. Measured at 0.3 (`default`, tuning seeds, 100 fresh
    placements): +0.005, and the critics still prefer the policy's own action (docs/results.md, round 31)."""
    rl_weight: float = 1.0
    """Weight of the actor's RL objective (eq. 12 and the entropy bonus). 1 is the paper's; 0 is an ablation: the
    actor then learns from the BC term (and the anchor) alone, while the world model, critics and discriminator
    train as before, which measures what the imitation reward adds to the policy."""
    reward: Literal["logratio", "prob", "env"] = "logratio"
    """Discriminator reward: 'logratio' = log D - log(1-D) (paper eq. 10); 'prob' = D (authors' code). 'env' is a
    measurement, not imitation learning: a reward head learns the task's own reward from the real frames (expert and
    replay) and replaces D's term everywhere (the penalty stays), the upper bound of what the RL machinery does with a
    perfect reward signal at a budget. D still trains, unread."""
    disc_noise_std: float = 1.5811
    """Std of the Gaussian noise on the discriminator's whole input; paper: sigma^2 = 2.5 (std 1.58), code: std 2.5."""
    disc_layers: int = 2
    """Hidden layers of the discriminator MLP."""
    disc_units: int = 200
    """Units per discriminator hidden layer."""
    disc_lr: float = 3e-4
    """Adam learning rate of the discriminator."""
    disc_grad_penalty: float = 0.0
    """Weight of a gradient penalty on D's input (WGAN-GP form, as pixel DAC's discriminator): ||grad D|| pulled to 1
    at random interpolates of expert and policy pairs (after `disc_input_norm`), beside the input noise. 0 = off
    (paper and authors' code: noise only). Issue 9, round 20: at weight 10 (pixel DAC's) on the tuning seeds the online
    phase ended at 0.395 on 100 fresh placements against 0.345 without it and the pretrained policy's 0.435, and the
    actor's whole RL gradient still did not point at the expert's action (docs/results.md)."""
    actor_layers: int = 4
    """Hidden layers of the actor MLP."""
    actor_units: int = 400
    """Units per actor hidden layer."""
    actor_heads: int = 1
    """Independently initialised actor MLPs whose means (and stds) are averaged into the policy; with bc_loss
    'mse' the BC term fits each head's mean on its own, so the average is an ensemble of BC policies (less
    variance between initialisations, against the closed-loop drift of docs/results.md round 6). 1 = one
    actor (authors' code)."""
    critic_layers: int = 4
    """Hidden layers of each Q critic MLP."""
    critic_units: int = 400
    """Units per critic hidden layer."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor (authors' code; DreamerV2's default is 8e-5)."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics (authors' code; DreamerV2's default is 2e-4)."""
    weight_decay: float = 1e-6
    """Decoupled weight decay per step of actor, critics and discriminator (authors' code)."""
    grad_clip: float = 100.0
    """Gradient-norm clip of actor, critics and discriminator."""
    stop_grad_actor_input: bool = True
    """Query the actor on a stop-gradient copy of each imagined feature (authors' code, DreamerV2), so the
    actor's gradient reaches it through the dynamics only via its actions; False lets it flow through its input."""
    actor_objective: Literal["lambda", "q", "q_real", "weighted"] = "lambda"
    """What the actor maximises on imagined steps. 'lambda' (paper eq. 12): lambda V^lambda + (1 - lambda) V0,
    with gradients through the learnt dynamics, reward and critics. 'q': min_i Q_i(s^t, pi(s^t)) with the
    imagined states detached, so the actor's RL gradient is the critics' action slope alone (DDPG / TD3+BC
    style) and never runs back through the model's dynamics or the discriminator. Measured (docs/results.md, round
    21; round-16 recipe, four tuning seeds, 100 fresh placements): with penalty_norm false, disc_policy_pairs 'replay'
    and disc_noise_std 0 the online phase held the pretrained policy (0.40 vs 0.405) where 'lambda' eroded it (0.32).
    'q_real': the same slope at the real states only (imagination step 0, every posterior state of the batch), so
    the actor never climbs the critics where the model imagined the state (docs/results.md, round 30).
    'weighted': no slope at all: at the real states, actions drawn around the actor's mean are scored by
    `weighted_score` and the actor's mean regresses onto their softmax-weighted average (critic-weighted
    regression, CRR / AWR style; no entropy bonus; docs/results.md, round 31)."""
    weighted_score: Literal["q", "disc"] = "q"
    """What scores the candidates of actor_objective 'weighted': 'q' = the critics' min Q; 'disc' = D's logit alone
    (one step: no critics, no penalty). Round 31 measured, at the policy's own states of two `default` runs, the run's
    D rating the scripted expert's action above the actor's at 0.74-0.76 of the states, the critics at 0.17-0.30;
    'disc' at rl_weight 5 then ended -0.03 on those seeds' 100 fresh placements (the actor takes what D knows, the
    gripper, and D retrained against it points along noise). Round 32: 'q' with alpha 0 (where the critics point at
    the expert) at rl_weight 5 +0.015 [-0.03, +0.06], and with the task's own reward (agent.reward 'env') -0.015."""
    weighted_candidates: int = 16
    """Candidate actions per state for actor_objective 'weighted'."""
    weighted_sigma: float = 0.3
    """Std of the candidates around the actor's mean (clipped to the action box); their softmax weights use each
    state's scores standardised over its candidates (temperature 1)."""
    critic_action_grad: bool = True
    """Let the actor's RL gradient run through the critics' action input (paper eq. 12: the values are
    Q(s^t, a^t) of the actor's own reparameterised actions). False reads the critics with the actions detached,
    as state values (DreamerV2's V), so an action moves the objective only through the reward and the dynamics:
    the critics' action slope, which their narrow action coverage leaves to the across-state link between an
    action and the value (docs/results.md, round 9), no longer steers the actor. Needs actor_objective 'lambda'.
    Measured on the `default` preset (tuning seed 100): the actor's gripper no longer drifts closed where the expert
    keeps it open (0.008 against 0.05-0.11), and success is unchanged (final 0.35, as the paper's form)."""
    bc_loss: Literal["nll", "mse"] = "nll"
    """BC term: 'nll' = -log pi(a^E | s^E) (authors' code); 'mse' = squared error of the actor's mean action."""
    bc_fit_std: bool = False
    """With bc_loss 'mse', also fit the actor's std by the NLL of the expert action around the detached mean
    (the mean still learns from the squared error alone). Without it the std keeps its initial ~0.8, so online
    episodes act almost at random."""
    bc_filter: Literal["expert", "policy"] = "expert"
    """States the BC term is computed on: 'expert' = the demos filtered with the expert's recorded actions
    (authors' code); 'policy' = filtered with the actor's own mean action at each previous frame, as when it
    acts. The expert's past actions reveal where it is heading (the puck, the goal), a cue the actor does not
    have in closed loop; with 'policy' (and bc_model_weight > 0) the representation must read it from the image."""
    bc_embed_weight: float = 0.0
    """Weight of an auxiliary BC head on the world model's per-frame image embedding (an MLP predicting the
    expert's action from one frame, as pixel BC does), trained with the world model so that the encoder learns
    the features that place the puck and goal; the actor still acts on latent states only. 0 = off (authors)."""
    bc_frame_shift: bool = False
    """Compute the BC term (the actor's and, with bc_model_weight, the representation's) on its own copy of
    the expert frames, each shifted independently (pad 4), as pixel BC's batches are, instead of on the world
    model's states, where a batch of 8 windows gets 8 shifts. Needs wm.posterior 'image' and wm.agent_feat
    'stoch' (the agent's feature is then a function of one frame). Off in the authors' code."""
    bc_feat_noise: float = 0.0
    """Std of Gaussian noise, in units of each feature dimension's std over the batch, added to the expert states
    the actor's own BC step reads (not the representation's BC term), so that nearby latent states map to nearby
    actions (noise injection against compounding error in closed loop). 0 = off (authors' code)."""
    bc_model_weight: float = 0.0
    """Weight of the BC loss in the world model's loss (the BC gradient shapes the representation; the actor's
    parameters get none of it). 0 = the authors' code, where only the actor learns from BC."""
    bc_action_noise: float = 0.0
    """Std of Gaussian noise on the expert sequences' actions as the world model filters them (clipped to
    [-1, 1]). The latent state carries the previous action and the expert's actions are smooth, so a BC actor
    on clean features learns to copy its last action (held-out error 0.026 -> 0.079 with the actions zeroed);
    noise makes the state's action history unreliable so that BC reads the image instead. 0 = authors' code."""
    disc_states: Literal["posterior", "prior"] = "posterior"
    """Which latent states the discriminator and the reward read on real data. 'posterior' (paper): expert pairs
    are posterior states, policy pairs imagined (prior) ones, so D can separate the two by how the state was
    made rather than by behaviour (a fresh D tells expert posterior states from the model's one-step prior
    predictions of the same expert frames with 0.99 accuracy). 'prior': real frames enter D as the model's
    one-step prediction from the previous posterior state and the action taken (the posterior at the first
    frame of a window, which has no predecessor), and D's policy pairs are the imagined steps after the
    start, so both sides come from the prior and only behaviour tells them apart."""
    disc_policy_pairs: Literal["imagined", "replay"] = "imagined"
    """D's policy side (eq. 8): the imagined pairs (paper, authors' code) or the replay batch's real ones, the policy's
    own frames and actions read as the expert side's are (posterior or prior states per `disc_states`), as GAIL / DAC
    train theirs. Issue 9, round 20: a fresh D trained on real pairs slopes towards the scripted expert's action at the
    policy's own states on every run probed, but trained this way online the run's own D sloped away from it and the
    online phase ended where the paper's form did (0.35 against 0.345 on 100 fresh placements; docs/results.md)."""
    disc_action: bool = True
    """Whether the discriminator reads the action beside the latent state (paper: state-action pairs). False: D
    reads the state alone, so the reward reaches the actor only through the learnt dynamics. On the `default`
    recipe's runs the trained D(s, a) scored zero actions and an open gripper as more expert-like than the expert's
    own actions at the expert's states; a state-only D did not change the online outcome on the tuning seeds
    (final 0.30 / 0.40 on seeds 100 / 101, within the `default`'s band): docs/results.md, round 8."""
    disc_input_norm: bool = False
    """Standardise the discriminator's input with running per-dimension statistics of the expert and policy
    pairs before the noise, so `disc_noise_std` is in units of each feature's std (off in the authors' code)."""
    penalty_norm: bool = False
    """Centre and scale the disagreement penalty by running statistics of the imagined disagreement, so alpha
    weighs how much more uncertain a step is than usual rather than adding a near-constant offset."""
    penalty_norm_freeze: int = 0
    """With penalty_norm: the statistics follow the imagined disagreement for this many agent updates (counting
    `pretrain_updates`' full updates, which imagine too; the `default` preset has none) and then stay fixed, so the penalty keeps measuring uncertainty against where the early online policy imagined, and a
    policy that drifts where the whole model is unsure pays for it. 0 = they follow for the whole run (then a
    global rise in disagreement is normalised away). Round 45 (push at action repeat 4, rl_weight 8, tuning seeds):
    with the statistics fixed after 100 updates the penalty reached ~-100 per imagined step and the policy still fell
    from 0.45 to 0.00 by 4K env steps, as it did without; the disagreement rose as much at the real states the policy
    reached as at the imagined ones (0.08 -> 0.22-0.25), so no ensemble penalty could have flagged that drift."""
    return_norm: bool = False
    """Divide the actor's return objective (eq. 12) by max(1, running 5-95% range of the returns), DreamerV3
    style, so that beta sets the real ratio of the RL and BC parts of the actor loss."""
    anchor_weight: float = 0.0
    """Weight of a pull of the actor's mean action on the replay's states (the policy's own, where the BC term
    says nothing) towards the mean action of a frozen copy of the acting policy taken when pretraining ends: a
    behaviour-regularised actor, which the RL term can move only where its gain outweighs the pull. The squared
    error has the MSE BC term's scale, so beta and this weigh alike. Online updates only; its gradient is logged
    with the BC part's (`train/actor_grad_bc`). 0 = off (authors)."""
    anchor_target: Literal["pretrained", "bc"] = "pretrained"
    """What the anchor (anchor_weight) pulls the online actor towards on the replay's states: 'pretrained' = the
    frozen acting actor of the end of pretraining; 'bc' = a pixel BC policy's action on the same frames (the `bc`
    method with this run's bc.* fields, trained on the demos at the start of pretraining, or taken from a trained
    run with `anchor_from`), a teacher labelling the policy's own states as in DAgger (a departure from the paper,
    off there and in the authors' code). With anchor_weight 0 there is no anchor and no teacher. Issue 9, round 24:
    docs/results.md."""
    anchor_filter: Literal["none", "q"] = "none"
    """Where the actor's anchor (anchor_weight) applies: 'none' = on every replay state; 'q' = only where the
    critics' min Q rates the anchor's target action at least as high as the actor's mean action (a Q-filter, as
    Nair et al. 2018 filter their demonstration BC term), so that where the critics prefer the policy's own action
    the RL term moves it without the pull. The world model's anchor term (anchor_model_weight) is not filtered.
    Logged: `train/anchor_kept`, the fraction of states kept. A departure from the paper (which has no anchor).
    Round 32 (alpha 0, actor_objective 'weighted' at rl_weight 5, tuning seeds): the critics kept the anchor at only
    5-46% of the replay's states and the policy collapsed (100 fresh placements 0.01 / 0.17 against 0.44 / 0.51
    unfiltered): in those runs the critics rated the actor's own action higher at most states (docs/results.md)."""
    anchor_model_weight: float = 0.0
    """Weight of the anchor's squared error (anchor_weight's, with its target) in the world model's loss on the
    replay's states, the actor frozen for that term: as bc_model_weight shapes the representation at the expert's
    states, this shapes it at the policy's own, where issue 9's round 23 found the features do not hold the puck.
    Online updates only; with anchor_weight 0 there is no anchor, and with wm.freeze_representation (the `long`
    preset) nothing for it to shape: it then does nothing. 0 = off (authors' code; the
    paper has no anchor). Issue 9, round 25: docs/results.md."""
    teacher_embed_weight: float = 0.0
    """Weight of a distillation term in the world model's loss: a linear head on the agent's features of every
    frame of the batch (expert and replay windows, pretraining included) predicts the pixel BC teacher's embedding
    of that frame (its head's last hidden layer, centred per unit and scaled by its overall RMS, so the term reads
    as the unexplained fraction). Meant to make the latent state hold what the teacher reads of the image (round 33:
    the anchor transfers the teacher's actions near the demos but not its reach). Needs anchor_target 'bc'
    (the teacher). 0 = off (authors' code; the paper has no teacher). Issue 9, round 34 (at 10): the far placements
    rise to the teacher's level, the benchmark's 100 fresh placements do not (0.56 against 0.57): docs/results.md."""
    self_imitation: float = 0.0
    """Self-imitation (a departure from the paper, off there and in the authors' code): the fraction of the online
    episodes (seed episodes included) that the run's own discriminator ranks most expert-like, by its mean logit
    on each episode's last `self_imitation_last` real (state, action) pairs, whose windows join the BC term as
    extra demonstrations. No success flag or reward is read: D's ranking alone chooses them. 0 = off."""
    self_imitation_rank: Literal["disc", "success"] = "disc"
    """What ranks the episodes for self-imitation: 'disc' (the method: D's logit, see self_imitation) or 'success'
    (a measurement only, not imitation learning: the task's success flag, which no method may read, ties broken
    by D), the upper bound of what selecting the policy's own episodes could give."""
    self_imitation_windows: int = 0
    """Windows of each update's replay batch (of batch_size) drawn from the selected episodes (0 = half of it,
    at least one); their frames enter the BC term beside the expert's and stay policy data for everything else."""
    self_imitation_last: int = 10
    """Pairs at an episode's end that its self-imitation score averages D's logit over (0 = the whole episode)."""
    self_imitation_every: int = 5
    """Online episodes between two rankings of all stored episodes for self-imitation."""
    policy_ema: float = 0.0
    """Act (collect and evaluate) with an exponential moving average of the world model's and the actor's
    weights, updated after every update with this decay (0 = act with the latest weights, as the authors).
    Closed-loop success of a BC-trained latent policy swings between consecutive snapshots (0.1 -> 0.5 at
    the same held-out action error); averaging the weights damps that (Polyak averaging)."""
    horizon: int = 15
    """H: imagination horizon."""
    gamma: float = 0.99
    """Discount (0.99: authors' code). Issue 9, round 43 (docs/results.md): 0.5 lets eq. 12 tolerate an imagined step
    that is off at each state by about its own size (toy), lifts CMIL's actor-critic on a learnt `point` model from
    below doing nothing to just above it (three seeds), and leaves push level (+0.01 on two tuning seeds)."""
    lam: float = 0.95
    """TD(lambda) parameter (eq. 11) and the mixing weight of eq. 12."""
    entropy: float = 1e-4
    """Weight of the actor's entropy bonus."""
    actor_min_std: float = 0.1
    """Lower bound of the actor's std (truncated normal)."""
    target_update_every: int = 100
    """Hard-copy the critics into their targets every this many updates."""
    critic_target: Literal["min", "random"] = "min"
    """Critic bootstrap: 'min' of the two target critics (paper), or one drawn at random per update (code)."""
    real_critic_loss: bool = True
    """Train the critics on real replay transitions too (eq. 14); off for VMAIL."""
    imag_from: Literal["all", "replay"] = "all"
    """Where imagination starts: 'all' = every posterior state of the expert and the replay batch; 'replay' =
    the replay batch's states only, as in the authors' code (there the demos are copied into the replay, so
    online its batches are mostly the policy's own). With 'all', half of D's policy pairs are rolled out from
    expert states by a BC-trained actor and look like the expert's. With 'replay' the real-data critic loss
    (eq. 14) runs on the replay sequences, the states whose imagined continuations exist."""
    imag_starts: int = 0
    """Imagination starts drawn from the B x L posterior states (0 = all, as in the paper; >0 needs
    real_critic_loss False, since eq. 14 uses the imagined continuation from every real state)."""


@dataclass(frozen=True)
class DACConfig:
    """Model-free pixel DAC (Kostrikov et al. 2019): off-policy actor-critic on a conv encoder."""

    feature_dim: int = 50
    """Size of the encoder's projected (LayerNorm + tanh) feature."""
    cnn_depth: int = 32
    """Channels of the conv encoder's first layer (doubling each layer)."""
    hidden: int = 256
    """Units of the actor/critic/discriminator hidden layers."""
    layers: int = 2
    """Hidden layers of the actor, each critic and the discriminator MLPs."""
    batch_size: int = 128
    """Transitions per update (policy and expert batches each)."""
    lr: float = 3e-4
    """Adam learning rate of actor, critics, encoder and entropy temperature."""
    disc_lr: float = 3e-4
    """Adam learning rate of the discriminator."""
    grad_penalty: float = 10.0
    """Weight of the discriminator's gradient penalty."""
    tau: float = 0.01
    """Polyak rate of the target critic (and target encoder)."""
    init_temperature: float = 0.1
    """Initial SAC entropy temperature (learnt so that the policy's entropy approaches the target)."""
    target_entropy: float = -0.5
    """Target policy entropy per action dimension. SAC's usual -1 is reachable only with means at the action
    bounds: a truncated normal with std >= 0.1 and an interior mean has entropy >= -0.88 per dimension."""
    gamma: float = 0.99
    """Discount of the soft TD target."""
    actor_min_std: float = 0.1
    """Lower bound of the actor's std (truncated normal on [-1, 1])."""
    reward: Literal["logratio", "positive"] = "logratio"
    """Reward from the discriminator: 'logratio' = log D - log(1-D); 'positive' = -log(1-D) (DAC paper)."""
    bc_weight: float = 0.0
    """Weight of an optional BC term in the actor loss (0 = BC-free, the default)."""


@dataclass(frozen=True)
class BCConfig:
    """Behaviour-cloning baseline: conv encoder + MLP regressing the expert's actions."""

    steps: int = 3_000
    """Gradient steps of the BC baseline (also CMIL's teacher's). Budget by steps, not passes over the demos: on
    mw-push (1,000 demo frames) 12,000 steps score 0.04 lower on fresh placements than 3,000, while on pick-place with
    a four-step action repeat (250 frames) 12,000 score 0.63 against 0.49 (docs/results.md, round 48)."""
    batch: int = 64
    """Frames per BC batch."""
    lr: float = 3e-4
    """Adam learning rate of BC."""
    augment: bool = True
    """Random-shift augmentation (pad 4) of BC's images."""
    cnn_depth: int = 32
    """Channels of the conv encoder's first layer (doubling each layer)."""
    units: int = 256
    """Units of each of the two hidden layers of the MLP head."""
    encoder: Literal["conv", "keypoints", "both"] = "conv"
    """Pixel BC's image encoder: 'conv' (DreamerV2's four stride-2 convs, flattened), 'keypoints' (a 12x12
    conv map read out as the coordinates of `bc.keypoints` spatial-softmax maps; on mw-push at 3,000 steps far more
    variable across seeds than 'conv', at 6,000 better on the tuning seeds and not on the benchmark's (0.53 against
    0.55): docs/results.md, rounds 33-34) or 'both' (the two side by side).
    Also CMIL's teacher's."""
    keypoints: int = 32
    """Spatial-softmax maps of bc.encoder 'keypoints'."""
    members: int = 1
    """Pixel policies trained side by side from different initialisations and batches, acting with their mean
    action (an ensemble; each member costs one more BC training). Also CMIL's teacher's. On mw-push 3 members
    narrow the spread over seeds but do not lift the benchmark's seeds, nor CMIL with them as teacher
    (docs/results.md, round 35)."""
