//! Assets (`USD/2`: a code and its decimal places) and amounts in minor units.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// An amount in minor units of its asset. Never a float.
pub type Amount = i128;

/// Most decimal places an asset may have (i128 holds 38 full digits).
pub const ASSET_SCALE_MAX: u8 = 18;
/// Longest asset code.
pub const ASSET_CODE_LEN_MAX: usize = 32;

/// Why a string is not a valid asset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssetError {
    /// The text (given) is not `CODE/DECIMALS`: it has no `/`.
    #[error("asset {0:?} is not CODE/DECIMALS, e.g. USD/2")]
    Shape(String),
    /// The code (given) is empty, longer than [`ASSET_CODE_LEN_MAX`], or not made of A-Z, 0-9,
    /// `-` and `_` starting with a letter.
    #[error("asset code {0:?} must be 1-{ASSET_CODE_LEN_MAX} of A-Z, 0-9, - and _, starting with a letter")]
    Code(String),
    /// The decimals (given) are not an integer from 0 to [`ASSET_SCALE_MAX`].
    #[error("asset decimals {0:?} must be an integer 0-{ASSET_SCALE_MAX}")]
    Scale(String),
}

/// An asset: upper-case code and the number of decimal places of its minor unit.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Asset {
    code: Arc<str>,
    scale: u8,
}

/// As its text, `CODE/DECIMALS`, written straight into the serializer (no `String` built).
impl Serialize for Asset {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Asset {
    /// Parses `CODE/DECIMALS`, e.g. `USD/2`, `BTC/8`, `SKU-123/0`.
    pub fn parse(s: &str) -> Result<Self, AssetError> {
        let (code, scale) = s.split_once('/').ok_or_else(|| AssetError::Shape(s.to_owned()))?;
        Self::new(code, scale.parse().map_err(|_| AssetError::Scale(scale.to_owned()))?)
    }

    /// The asset `code` with `scale` decimal places; [`AssetError::Code`] or [`AssetError::Scale`]
    /// when either breaks the rules.
    pub fn new(code: &str, scale: u8) -> Result<Self, AssetError> {
        let well_formed = !code.is_empty()
            && code.len() <= ASSET_CODE_LEN_MAX
            && code.starts_with(|c: char| c.is_ascii_uppercase())
            && code.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !well_formed {
            return Err(AssetError::Code(code.to_owned()));
        }
        if scale > ASSET_SCALE_MAX {
            return Err(AssetError::Scale(scale.to_string()));
        }
        Ok(Self { code: code.into(), scale })
    }

    /// The code, e.g. `USD`.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The number of decimal places of the minor unit (2 for `USD/2`: 1 unit = 100 minor units).
    pub fn scale(&self) -> u8 {
        self.scale
    }
}

impl fmt::Display for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.code, self.scale)
    }
}

impl fmt::Debug for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Asset({self})")
    }
}

impl TryFrom<String> for Asset {
    type Error = AssetError;
    fn try_from(s: String) -> Result<Self, AssetError> {
        Self::parse(&s)
    }
}

impl From<Asset> for String {
    fn from(a: Asset) -> String {
        a.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_assets() {
        let usd = Asset::parse("USD/2").unwrap();
        assert_eq!((usd.code(), usd.scale()), ("USD", 2));
        assert_eq!(usd.to_string(), "USD/2");
        assert!(Asset::parse("SKU-123/0").is_ok());
        assert!(matches!(Asset::parse("USD"), Err(AssetError::Shape(_))));
        assert!(matches!(Asset::parse("usd/2"), Err(AssetError::Code(_))));
        assert!(matches!(Asset::parse("/2"), Err(AssetError::Code(_))));
        assert!(matches!(Asset::parse("USD/x"), Err(AssetError::Scale(_))));
        assert!(matches!(Asset::parse("USD/19"), Err(AssetError::Scale(_))));
        assert!(matches!(Asset::parse("USD/-1"), Err(AssetError::Scale(_))));
    }
}
