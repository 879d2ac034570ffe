//! The object-store key layout. Everything a project stores lives under its prefix
//! `orgs/{org}/projects/{project}`:
//!
//! ```text
//! acquisitions/{run}/windows/{window}/{modality}.safetensors  acquire: a window's tensors per modality
//! windows/{window}/{modality}.safetensors                     (before acquisitions had their own folders)
//! runs/{run}/model/claim-{claim}/{model.json, weights.safetensors, baseline.json}
//!                                                             train: the trained model, per claim
//! runs/{run}/checkpoints/…                                    train: per-epoch checkpoints and state
//! runs/{run}/{stage}/{step}/claim-{claim}…                    predict, combine, publish: per claim
//! changes/{change}/change.tif                                 a change map between two class maps
//! ```
//!
//! Keys of step outputs carry the step and its claim, so a re-run never overwrites what an earlier
//! execution committed.
//!
//! Pretrained encoder checkpoints are shared by every organisation and worker, outside any project:
//!
//! ```text
//! models/OlmoEarth-v1-{Size}/{checksums.json, config.json, weights.pth | encoder.safetensors}
//!                                                             `groundwork model import` / `model fetch`
//! ```

use crate::{Modality, ModelSize, StepKind};
use uuid::Uuid;

/// The keys of one project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectKeys {
    prefix: String,
}

/// The files of a trained model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelKeys {
    /// `model.json`: the manifest.
    pub manifest: String,
    /// The weights (safetensors).
    pub weights: String,
    /// The frozen-encoder baseline (JSON).
    pub baseline: String,
}

impl ModelKeys {
    /// The model files in `folder`.
    #[must_use]
    pub fn in_folder(folder: &str) -> Self {
        ModelKeys {
            manifest: format!("{folder}/model.json"),
            weights: format!("{folder}/weights.safetensors"),
            baseline: format!("{folder}/baseline.json"),
        }
    }

    /// The files beside a manifest key (`…/model.json`).
    #[must_use]
    pub fn beside(manifest: &str) -> Self {
        let folder = manifest.rsplit_once('/').map_or("", |(folder, _)| folder);
        Self::in_folder(folder)
    }
}

/// The shared copy of a pretrained OlmoEarth checkpoint in the object store,
/// `models/OlmoEarth-v1-{Size}/`: `groundwork model import` (and `model fetch`) upload it once, and a
/// worker whose model folder lacks it downloads it from there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PretrainedKeys {
    folder: String,
}

impl PretrainedKeys {
    /// Where every pretrained checkpoint lives.
    pub const ROOT: &'static str = "models";

    /// The keys of the release of `size`.
    #[must_use]
    pub fn new(size: ModelSize) -> Self {
        PretrainedKeys {
            folder: format!("{}/{}", Self::ROOT, size.release_name()),
        }
    }

    /// The folder, `models/OlmoEarth-v1-{Size}`.
    #[must_use]
    pub fn folder(&self) -> &str {
        &self.folder
    }

    /// One file of the checkpoint (`config.json`, `weights.pth`, …).
    #[must_use]
    pub fn file(&self, name: &str) -> String {
        format!("{}/{name}", self.folder)
    }

    /// `checksums.json`: the files, their SHA-256 and how each was verified. Written last, so a
    /// checkpoint is complete once it exists.
    #[must_use]
    pub fn checksums(&self) -> String {
        self.file("checksums.json")
    }
}

impl ProjectKeys {
    /// The keys of `project_id` of `org_id`.
    #[must_use]
    pub fn new(org_id: Uuid, project_id: Uuid) -> Self {
        ProjectKeys {
            prefix: format!("orgs/{org_id}/projects/{project_id}"),
        }
    }

    /// The project's prefix; every key below starts with it.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A window's tensors for one modality, relative to the project's prefix (what `acquire` writes
    /// under the prefix it is given).
    #[must_use]
    pub fn window_relative(window_id: &str, modality: Modality) -> [String; 3] {
        [
            "windows".into(),
            window_id.into(),
            format!("{}.safetensors", modality.name()),
        ]
    }

    /// A window's tensors for one modality.
    #[must_use]
    pub fn window(&self, window_id: &str, modality: Modality) -> String {
        let [a, b, c] = Self::window_relative(window_id, modality);
        format!("{}/{a}/{b}/{c}", self.prefix)
    }

    /// The folder an acquisition run writes its window tensors under
    /// (`…/acquisitions/{run}/windows/{window}/{modality}.safetensors`): every acquisition has its own,
    /// so a later one never overwrites the imagery an earlier model was trained on. Windows record the
    /// keys they were given (`project_window.objects`); readers take them from there.
    #[must_use]
    pub fn acquisition(&self, run_id: Uuid) -> String {
        format!("{}/acquisitions/{run_id}", self.prefix)
    }

    /// The files of the model a run trained before models had a folder per claim (still read for
    /// older runs; see [`ProjectKeys::trained_model`]).
    #[must_use]
    pub fn model(&self, run_id: Uuid) -> ModelKeys {
        ModelKeys::in_folder(&format!("{}/runs/{run_id}/model", self.prefix))
    }

    /// The files of the model one claim of a run's `train` step writes
    /// (`…/runs/{run}/model/claim-{claim}/`): an execution that lost its lease writes beside the
    /// winner's files, never over them, and the succeeded step's output names the winner's manifest.
    #[must_use]
    pub fn trained_model(&self, run_id: Uuid, claim_id: Uuid) -> ModelKeys {
        ModelKeys::in_folder(&format!(
            "{}/runs/{run_id}/model/claim-{claim_id}",
            self.prefix
        ))
    }

    /// Whether `key` lies under this project's prefix (a key read from a step's output is used only
    /// then).
    #[must_use]
    pub fn owns(&self, key: &str) -> bool {
        key.strip_prefix(&self.prefix)
            .is_some_and(|rest| rest.starts_with('/') && !rest.split('/').any(|p| p == ".."))
    }

    /// Where a run's training checkpoints live.
    #[must_use]
    pub fn checkpoints(&self, run_id: Uuid) -> String {
        format!("{}/runs/{run_id}/checkpoints", self.prefix)
    }

    /// The folder of one claim of a step's outputs (`…/runs/{run}/{kind}/{step}/claim-{claim}`): two
    /// executions of a step never write the same keys, even after a retry restarts its attempts.
    #[must_use]
    pub fn claim(&self, run_id: Uuid, kind: StepKind, step_id: Uuid, claim_id: Uuid) -> String {
        format!(
            "{}/runs/{run_id}/{kind}/{step_id}/claim-{claim_id}",
            self.prefix
        )
    }

    /// The change raster of a change map between two of the project's class maps
    /// (`…/changes/{change}/change.tif`, a COG written once when the change map is made).
    #[must_use]
    pub fn change_map(&self, change_id: Uuid) -> String {
        format!("{}/changes/{change_id}/change.tif", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        let (o, p, r, s) = (
            Uuid::nil(),
            Uuid::max(),
            Uuid::from_u128(7),
            Uuid::from_u128(9),
        );
        let k = ProjectKeys::new(o, p);
        assert_eq!(k.prefix(), format!("orgs/{o}/projects/{p}"));
        assert_eq!(
            k.window("32633_1_2", Modality::Sentinel1),
            format!("orgs/{o}/projects/{p}/windows/32633_1_2/sentinel1.safetensors")
        );
        assert_eq!(
            k.model(r).weights,
            format!("orgs/{o}/projects/{p}/runs/{r}/model/weights.safetensors")
        );
        let m = k.trained_model(r, s);
        assert_eq!(
            m.manifest,
            format!("orgs/{o}/projects/{p}/runs/{r}/model/claim-{s}/model.json")
        );
        assert_eq!(ModelKeys::beside(&m.manifest), m);
        assert!(k.owns(&m.weights));
        assert!(!k.owns(&format!("orgs/{o}/projects/{p}x/runs")));
        assert!(!k.owns(&format!("orgs/{o}/projects/{p}/../other/runs")));
        assert_eq!(
            k.claim(r, StepKind::Predict, s, o),
            format!("orgs/{o}/projects/{p}/runs/{r}/predict/{s}/claim-{o}")
        );
        assert_eq!(
            k.change_map(s),
            format!("orgs/{o}/projects/{p}/changes/{s}/change.tif")
        );
        let shared = PretrainedKeys::new(ModelSize::Nano);
        assert_eq!(shared.folder(), "models/OlmoEarth-v1-Nano");
        assert_eq!(
            shared.file("weights.pth"),
            "models/OlmoEarth-v1-Nano/weights.pth"
        );
        assert_eq!(
            PretrainedKeys::new(ModelSize::Large).checksums(),
            "models/OlmoEarth-v1-Large/checksums.json"
        );
    }
}
