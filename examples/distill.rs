//! Policy distillation: compress a 64-64 PPO teacher on CartPole-v1 into a
//! 16-16 student (12× fewer parameters) by matching the teacher's softened
//! action distributions.
//!
//! 1. Train the teacher with PPO and the adaptive KL penalty
//!    (`configs/cartpole-ppo-kl-adaptive.toml`).
//! 2. Run the teacher (sampling its actions, so that the data also holds
//!    states a little off its most probable path) and record the states.
//! 3. Train the student on those states by minimising
//!    T² · Ê_s[KL(π_teacher,T(·|s) ‖ π_student,T(·|s))], where π_T =
//!    softmax(z / T) divides both networks' logits z by the temperature T.
//!    The T² keeps the gradient's size independent of T (Hinton, Vinyals &
//!    Dean 2015, "Distilling the knowledge in a neural network", §2); the KL
//!    is the exact one of `Dist::kl`, the optimiser `klrl::optim::adam::Adam`
//!    on the student's flat parameter vector.
//! 4. Evaluate both deterministically, and report the distillation KL at
//!    T = 1 on held-out teacher states.
//!
//! Run it from the workspace root:
//!
//! ```text
//! cargo run --release --example distill
//! ```
//!
//! Expected output: the teacher's training (a line every 100 updates), the
//! distillation loss every 5 epochs, then the returns of teacher and student
//! over 20 episodes (both 500 when the teacher solved the task), the
//! held-out KL(teacher ‖ student) at T = 1 (about 10⁻⁴ nats) and how often the
//! student picks the teacher's most probable action there (over 99 %).
//! About 5 s. The last line reads
//! `final: teacher_return=500.0 student_return=500.0 kl=… agreement=…`.
//!
//! With `KLRL_EXAMPLE_QUICK=1` the teacher trains for 25k steps instead of
//! 100k and the student learns from 5k states instead of 20k (about 2 s).

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use klrl::envs::{Action, Registry};
use klrl::optim::adam::Adam;
use klrl::optim::{evaluate, ExperimentConfig, Trainer};
use klrl::policy::{Activation, Categorical, CategoricalPolicy, Dist, MlpConfig, Policy};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The temperature T of both softmaxes.
const TEMPERATURE: f64 = 2.0;

fn main() -> Result<()> {
    // One compute thread: candle's thread pool is ~20× slower on networks this small.
    for var in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, "1");
        }
    }
    let quick = std::env::var_os("KLRL_EXAMPLE_QUICK").is_some();
    let (n_states, epochs) = if quick { (5_000, 40) } else { (20_000, 30) };

    // 1. The teacher.
    let mut config: ExperimentConfig =
        toml::from_str(include_str!("../configs/cartpole-ppo-kl-adaptive.toml"))
            .context("parsing configs/cartpole-ppo-kl-adaptive.toml")?;
    if quick {
        config.train.total_steps = 25_000;
    }
    let registry = Registry::builtin();
    let mut teacher = Trainer::from_config(config.clone(), &registry)?;
    teacher.train(|r| {
        if r.update % 100 == 0 {
            println!("teacher update {:>4}  steps {:>6}", r.update, r.env_steps);
        }
        true
    })?;
    let obs_norm = teacher.collector.obs_norm.clone();
    let obs_norm = obs_norm.as_ref();

    // 2. States visited by the teacher (observations as the policies see them).
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut env = registry.make(&config.env.name, &config.env.params)?;
    let (mut raw, mut states) = (Vec::new(), Vec::with_capacity(4 * n_states));
    env.reset(Some(7), &mut raw)?;
    for _ in 0..n_states {
        let mut obs = raw.clone();
        if let Some(norm) = obs_norm {
            norm.normalize(&mut obs);
        }
        let actions = teacher
            .policy
            .dist(&teacher.policy.obs_tensor(&obs)?, None)?
            .sample(&mut rng)?;
        states.extend_from_slice(&obs);
        let action = actions
            .as_discrete()
            .context("CartPole has discrete actions")?[0];
        if env.step(Action::Discrete(action), &mut raw)?.done() {
            env.reset(None, &mut raw)?;
        }
    }
    let obs_dim = teacher.policy.obs_dim();
    let states = teacher.policy.obs_tensor(&states)?;
    // Hold out every fifth state to measure the final KL.
    let (train_idx, test_idx): (Vec<u32>, Vec<u32>) =
        (0..n_states as u32).partition(|i| i % 5 != 0);
    let test_idx = Tensor::new(test_idx.as_slice(), &Device::Cpu)?;
    let Dist::Categorical(teacher_dist) = teacher.policy.dist(&states, None)?.detach() else {
        bail!("the teacher should have a categorical policy");
    };
    let teacher_logits = teacher_dist.logits();

    // 3. The student, trained on T² · KL(teacher_T ‖ student_T).
    let small = MlpConfig {
        hidden: vec![16, 16],
        activation: Activation::Tanh,
    };
    let n_actions = teacher.policy.action_dim();
    let student = CategoricalPolicy::new(
        obs_dim,
        n_actions,
        &small,
        DType::F32,
        &Device::Cpu,
        &mut rng,
    )?;
    println!(
        "\nteacher {} parameters, student {}; distilling on {} states at T = {TEMPERATURE}",
        teacher.policy.num_params(),
        student.num_params(),
        train_idx.len()
    );
    let mut adam = Adam::new(student.num_params(), 1e-8);
    let mut order = train_idx;
    let mut step = 0;
    for epoch in 0..epochs {
        order.shuffle(&mut rng);
        let mut epoch_loss = 0.0;
        for batch in order.chunks(256) {
            let idx = Tensor::new(batch, &Device::Cpu)?;
            let loss = distillation_loss(
                &teacher_logits.index_select(&idx, 0)?,
                &student,
                &states.index_select(&idx, 0)?,
                TEMPERATURE,
            )?;
            epoch_loss += loss.to_scalar::<f32>()? as f64 * batch.len() as f64;
            let grad = student.flat_grad(&loss)?;
            adam.step_flat(&student.vars(), &grad, 3e-3, f64::INFINITY, step)?;
            step += 1;
        }
        if epoch % 5 == 4 || epoch + 1 == epochs {
            let mean = epoch_loss / order.len() as f64;
            println!(
                "epoch {:>3}  T²·KL(teacher_T ‖ student_T) {mean:.5}",
                epoch + 1
            );
        }
    }

    // 4. Compare: returns, held-out KL at T = 1, and action agreement.
    let test_states = states.index_select(&test_idx, 0)?;
    let kl = distillation_loss(
        &teacher_logits.index_select(&test_idx, 0)?,
        &student,
        &test_states,
        1.0,
    )?
    .to_scalar::<f32>()?;
    let teacher_test = Categorical::from_logits(&teacher_logits.index_select(&test_idx, 0)?, None)?;
    let teacher_actions = Dist::Categorical(teacher_test).mode()?;
    let student_actions = student.dist(&test_states, None)?.mode()?;
    let (t, s) = (
        teacher_actions.as_discrete().context("discrete teacher")?,
        student_actions.as_discrete().context("discrete student")?,
    );
    let agreement = t.iter().zip(s).filter(|(a, b)| a == b).count() as f64 / t.len() as f64;

    let teacher_eval = teacher.evaluate(env.as_mut(), 20, true, 1_000)?;
    let student_eval = evaluate(&student, obs_norm, env.as_mut(), 20, true, 1_000, u64::MAX)?;
    println!(
        "\nteacher (64-64): mean return {:.1} over 20 episodes",
        teacher_eval.mean_return()
    );
    println!(
        "student (16-16): mean return {:.1} over 20 episodes",
        student_eval.mean_return()
    );
    println!(
        "held-out KL(teacher ‖ student) at T = 1: {kl:.2e} nats; same action on {:.1} % of them",
        100.0 * agreement
    );
    println!(
        "final: teacher_return={:.1} student_return={:.1} kl={kl:.3e} agreement={agreement:.4}",
        teacher_eval.mean_return(),
        student_eval.mean_return()
    );
    Ok(())
}

/// T² · mean over the states of KL(softmax(z_teacher / T) ‖ softmax(z_student / T))
/// (Hinton et al. 2015, §2), differentiable in the student's parameters.
fn distillation_loss(
    teacher_logits: &Tensor,
    student: &CategoricalPolicy,
    states: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    let teacher = Dist::Categorical(Categorical::from_logits(
        &(teacher_logits / temperature)?,
        None,
    )?);
    let student = Dist::Categorical(Categorical::from_logits(
        &(student.logits(states)? / temperature)?,
        None,
    )?);
    Ok((teacher.kl(&student)?.mean_all()? * (temperature * temperature))?)
}
