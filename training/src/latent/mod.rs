//! The paper's latent-space study of MNIST (its Sections 4.1–4.2): a 2-D VAE (`vae`) whose
//! decoder turns latent points into images for the classifier to score, and the maps of the
//! classifier's uncertainty over that space (`maps`).

pub mod holes;
pub mod interpolation;
pub mod maps;
pub mod vae;
