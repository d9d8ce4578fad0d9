//! `general.file_type`: llama.cpp's name for how a model file is quantized.

/// (id, name) from llama.cpp's `llama_ftype`; gaps are retired ids.
const FILE_TYPES: &[(u64, &str)] = &[
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (7, "Q8_0"),
    (8, "Q5_0"),
    (9, "Q5_1"),
    (10, "Q2_K"),
    (11, "Q3_K_S"),
    (12, "Q3_K_M"),
    (13, "Q3_K_L"),
    (14, "Q4_K_S"),
    (15, "Q4_K_M"),
    (16, "Q5_K_S"),
    (17, "Q5_K_M"),
    (18, "Q6_K"),
    (19, "IQ2_XXS"),
    (20, "IQ2_XS"),
    (21, "Q2_K_S"),
    (22, "IQ3_XS"),
    (23, "IQ3_XXS"),
    (24, "IQ1_S"),
    (25, "IQ4_NL"),
    (26, "IQ3_S"),
    (27, "IQ3_M"),
    (28, "IQ2_S"),
    (29, "IQ2_M"),
    (30, "IQ4_XS"),
    (31, "IQ1_M"),
    (32, "BF16"),
    (36, "TQ1_0"),
    (37, "TQ2_0"),
    (38, "MXFP4_MOE"),
];

/// The quantization name for a `general.file_type` id, e.g. 15 → `Q4_K_M`.
pub fn file_type_name(id: u64) -> Option<&'static str> {
    FILE_TYPES
        .iter()
        .find(|(known, _)| *known == id)
        .map(|(_, name)| *name)
}

impl crate::Gguf {
    /// How the file is quantized: `general.file_type` by name, else the
    /// type holding most of the weight bytes.
    pub fn quantization(&self) -> Option<String> {
        if let Some(name) = self
            .get("general.file_type")
            .and_then(crate::Value::as_u64)
            .and_then(file_type_name)
        {
            return Some(name.to_string());
        }
        let mut by_type: Vec<(&'static str, u64)> = Vec::new();
        for tensor in &self.tensors {
            match by_type.iter_mut().find(|(name, _)| *name == tensor.ty.name) {
                Some((_, bytes)) => *bytes += tensor.bytes,
                None => by_type.push((tensor.ty.name, tensor.bytes)),
            }
        }
        by_type
            .into_iter()
            .max_by_key(|(_, bytes)| *bytes)
            .map(|(name, _)| name.to_string())
    }

    /// The trained context length, `<arch>.context_length`.
    pub fn context_length(&self) -> Option<u64> {
        let arch = self.architecture()?;
        self.get(&format!("{arch}.context_length"))?.as_u64()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::file_type_name(15), Some("Q4_K_M"));
        assert_eq!(super::file_type_name(3), Some("Q4_1"));
        assert_eq!(super::file_type_name(4), None);
    }
}
