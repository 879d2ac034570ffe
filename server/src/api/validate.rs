//! Validation of project fields: classes and model settings (the AOI's checks are in
//! [`crate::geometry`]).

use super::error::FieldError;

pub use groundwork_types::{ClassDef, ModelSize, Task};

fn err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// Validates the class legend.
pub fn classes(classes: &[ClassDef], errors: &mut Vec<FieldError>) {
    let mut ids = std::collections::HashSet::new();
    let mut names = std::collections::HashSet::new();
    for (i, c) in classes.iter().enumerate() {
        if c.id == 255 {
            errors.push(err(
                format!("classes[{i}].id"),
                "255 is reserved for nodata",
            ));
        }
        if !ids.insert(c.id) {
            errors.push(err(
                format!("classes[{i}].id"),
                format!("class id {} is used twice", c.id),
            ));
        }
        let name = c.name.trim();
        if name.is_empty() || name.len() > 100 {
            errors.push(err(
                format!("classes[{i}].name"),
                "a class name must have 1–100 characters",
            ));
        } else if !names.insert(name.to_lowercase()) {
            errors.push(err(
                format!("classes[{i}].name"),
                format!("class name {name:?} is used twice"),
            ));
        }
        let hex = c.color.strip_prefix('#').unwrap_or("");
        if hex.len() != 6 || !hex.chars().all(|ch| ch.is_ascii_hexdigit()) {
            errors.push(err(
                format!("classes[{i}].color"),
                "a colour must be #rrggbb",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_must_be_unique_and_coloured() {
        let mut errors = Vec::new();
        classes(
            &[
                ClassDef {
                    id: 1,
                    name: "Water".into(),
                    color: "#0000ff".into(),
                },
                ClassDef {
                    id: 1,
                    name: "water".into(),
                    color: "blue".into(),
                },
            ],
            &mut errors,
        );
        assert_eq!(errors.len(), 3, "{errors:?}");
    }
}
