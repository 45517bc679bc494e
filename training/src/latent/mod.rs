//! The paper's latent-space study of MNIST (its Sections 4.1–4.2): a 2-D VAE (`vae`) whose
//! decoder turns latent points into images for the classifier to score.

pub mod vae;
