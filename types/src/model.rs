//! What a project asks the model to do: the task, the head that does it, and the encoder's size.

use crate::names::named_enum;

/// What a project predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    /// A class per window.
    Classification,
    /// A class per pixel.
    Segmentation,
    /// A value per window or pixel.
    Regression,
}

named_enum!(Task, "task", [
    Classification => "classification",
    Segmentation => "segmentation",
    Regression => "regression",
]);

impl Task {
    /// Whether the task predicts classes (classification, segmentation) rather than values.
    #[must_use]
    pub const fn has_classes(self) -> bool {
        match self {
            Task::Classification | Task::Segmentation => true,
            Task::Regression => false,
        }
    }

    /// The head a model of this task gets when none is asked for.
    #[must_use]
    pub const fn default_head(self) -> HeadKind {
        match self {
            Task::Segmentation | Task::Classification | Task::Regression => HeadKind::Hybrid,
        }
    }

    /// The heads that can do this task, the default first.
    #[must_use]
    pub const fn heads(self) -> &'static [HeadKind] {
        match self {
            Task::Segmentation => &[
                HeadKind::Hybrid,
                HeadKind::LightSegmentation,
                HeadKind::UNet,
            ],
            Task::Classification => &[HeadKind::Hybrid, HeadKind::Pooling],
            Task::Regression => &[HeadKind::Hybrid, HeadKind::Pooling, HeadKind::UNet],
        }
    }
}

/// A task head on top of the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeadKind {
    /// The encoder's tokens (bilinearly upsampled) and the normalised 10 m input pixels, each through a
    /// 1×1 convolution, plus a small convolutional path over both: outputs at full resolution whatever
    /// the patch size (dense; averaged over the window for classification).
    Hybrid,
    /// Bilinear upsampling + 1×1 conv (dense).
    LightSegmentation,
    /// Conv decoder with ×2 upsamplings (dense).
    UNet,
    /// Conv + global max pool + MLP (one output per window).
    Pooling,
}

named_enum!(HeadKind, "head", [
    Hybrid => "hybrid",
    LightSegmentation => "light_segmentation",
    UNet => "unet",
    Pooling => "pooling",
]);

impl HeadKind {
    /// Whether the head outputs one value per pixel.
    #[must_use]
    pub const fn is_dense(self) -> bool {
        match self {
            HeadKind::Hybrid | HeadKind::LightSegmentation | HeadKind::UNet => true,
            HeadKind::Pooling => false,
        }
    }

    /// Whether this head can do `task` with `num_outputs` outputs (classes, or 1 for regression).
    ///
    /// The one place that says which tasks accept which heads: the API, training and model loading all
    /// ask it.
    #[must_use]
    pub fn fits(self, task: Task, num_outputs: usize) -> bool {
        let listed = task.heads().contains(&self);
        match task {
            Task::Regression => listed && num_outputs == 1,
            Task::Classification | Task::Segmentation => listed && num_outputs >= 1,
        }
    }
}

/// The four released OlmoEarth v1 sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelSize {
    /// D=128, depth 4, 8 heads (1.4M encoder parameters).
    Nano,
    /// D=192, depth 12, 3 heads (6.2M).
    Tiny,
    /// D=768, depth 12, 12 heads (89M).
    Base,
    /// D=1024, depth 24, 16 heads (308M).
    Large,
}

named_enum!(ModelSize, "model size", [
    Nano => "nano",
    Tiny => "tiny",
    Base => "base",
    Large => "large",
]);

impl ModelSize {
    /// `(embedding_size, depth, num_heads)` of the preset.
    #[must_use]
    pub const fn dims(self) -> (usize, usize, usize) {
        match self {
            ModelSize::Nano => (128, 4, 8),
            ModelSize::Tiny => (192, 12, 3),
            ModelSize::Base => (768, 12, 12),
            ModelSize::Large => (1024, 24, 16),
        }
    }

    /// The release's name, `OlmoEarth-v1-<Size>`: its folder under a model root and in the object store.
    #[must_use]
    pub const fn release_name(self) -> &'static str {
        match self {
            ModelSize::Nano => "OlmoEarth-v1-Nano",
            ModelSize::Tiny => "OlmoEarth-v1-Tiny",
            ModelSize::Base => "OlmoEarth-v1-Base",
            ModelSize::Large => "OlmoEarth-v1-Large",
        }
    }

    /// The Hugging Face repository of the release, `allenai/OlmoEarth-v1-<Size>`.
    #[must_use]
    pub const fn hf_repo(self) -> &'static str {
        match self {
            ModelSize::Nano => "allenai/OlmoEarth-v1-Nano",
            ModelSize::Tiny => "allenai/OlmoEarth-v1-Tiny",
            ModelSize::Base => "allenai/OlmoEarth-v1-Base",
            ModelSize::Large => "allenai/OlmoEarth-v1-Large",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_accepts_its_default_head_and_refuses_the_others() {
        for &task in Task::ALL {
            let k = if task == Task::Regression { 1 } else { 3 };
            assert!(task.default_head().fits(task, k), "{task}");
            assert_eq!(task.heads()[0], task.default_head());
            for &head in HeadKind::ALL {
                assert_eq!(
                    head.fits(task, k),
                    task.heads().contains(&head),
                    "{task} {head}"
                );
            }
        }
        assert!(!HeadKind::Pooling.fits(Task::Regression, 2));
        assert!(!HeadKind::Pooling.fits(Task::Segmentation, 3));
        assert!(!HeadKind::UNet.fits(Task::Classification, 3));
    }

    #[test]
    fn names_parse_in_any_case() {
        assert_eq!("Base".parse::<ModelSize>(), Ok(ModelSize::Base));
        assert_eq!("unet".parse::<HeadKind>(), Ok(HeadKind::UNet));
        assert_eq!(
            serde_json::from_str::<Task>("\"segmentation\"").ok(),
            Some(Task::Segmentation)
        );
        assert!(serde_json::from_str::<Task>("\"detection\"").is_err());
    }
}
