//! A labelled image folder in the usual "ImageFolder" layout: one sub-folder per class, named
//! after it, holding that class's PNG/JPEG/PNM files (`PetImages/Cat/1.jpg`,
//! `PetImages/Dog/1.jpg`). Classes are the sub-folders in name order; their index is the
//! label. Other files (PetImages ships `Thumbs.db`) are counted and reported, not read.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

/// Extensions the runtime decodes (the `image` features of the `mcgate` crate).
const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "pbm", "pgm", "ppm"];

/// The files of an image folder, class by class, in name order.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFolder {
    pub root: PathBuf,
    /// Sub-folder names, in name order.
    pub classes: Vec<String>,
    /// Image files, class by class, each class's in name order.
    pub files: Vec<PathBuf>,
    /// Each file's class index.
    pub labels: Vec<usize>,
    /// Files in class folders that are not images by their extension.
    pub not_images: Vec<PathBuf>,
}

impl ImageFolder {
    /// Reads the layout of `root`: at least two class folders, each with at least one image.
    pub fn scan(root: &Path) -> Result<ImageFolder> {
        let mut class_dirs = vec![];
        for entry in sorted_entries(root)? {
            if entry.is_dir() {
                class_dirs.push(entry);
            }
        }
        ensure!(
            class_dirs.len() >= 2,
            "{}: {} class folder(s); an image folder has one sub-folder per class, at least two",
            root.display(),
            class_dirs.len()
        );
        let (mut classes, mut files, mut labels, mut not_images) = (vec![], vec![], vec![], vec![]);
        for (label, dir) in class_dirs.iter().enumerate() {
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| format!("{}: class folder name is not UTF-8", dir.display()))?;
            let before = files.len();
            for path in sorted_entries(dir)? {
                if !path.is_file() {
                    continue;
                }
                if is_image(&path) {
                    files.push(path);
                    labels.push(label);
                } else {
                    not_images.push(path);
                }
            }
            ensure!(
                files.len() > before,
                "{}: class {name:?} has no PNG, JPEG or PNM file",
                dir.display()
            );
            classes.push(name.to_string());
        }
        Ok(ImageFolder {
            root: root.to_owned(),
            classes,
            files,
            labels,
            not_images,
        })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// "Cat 12, Dog 10": each class with its image count, for logs and cards.
    pub fn counts_text(&self) -> String {
        self.classes
            .iter()
            .zip(self.counts())
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Images per class, in class order.
    pub fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            counts[l] += 1;
        }
        counts
    }
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort();
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn classes_are_the_sub_folders_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "Dog/2.jpg",
            "Dog/1.JPG",
            "Cat/a.png",
            "Cat/Thumbs.db",
            "notes.txt",
        ] {
            touch(&dir.path().join(f));
        }
        let folder = ImageFolder::scan(dir.path()).unwrap();
        assert_eq!(folder.classes, ["Cat", "Dog"]);
        let names: Vec<_> = folder
            .files
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["Cat/a.png", "Dog/1.JPG", "Dog/2.jpg"]);
        assert_eq!(folder.labels, [0, 1, 1]);
        assert_eq!(folder.counts(), [1, 2]);
        assert_eq!(folder.counts_text(), "Cat 1, Dog 2");
        assert_eq!(folder.not_images, [dir.path().join("Cat/Thumbs.db")]);
    }

    #[test]
    fn one_class_or_an_empty_class_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("Cat/a.png"));
        let err = ImageFolder::scan(dir.path()).unwrap_err().to_string();
        assert!(err.contains("1 class folder(s)"), "{err}");
        touch(&dir.path().join("Dog/readme.txt"));
        let err = ImageFolder::scan(dir.path()).unwrap_err().to_string();
        assert!(err.contains("class \"Dog\" has no PNG"), "{err}");
        let err = ImageFolder::scan(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("reading"), "{err}");
    }
}
