//! Version negotiation: the app offers a range in its [`ClientHello`], the broker picks the highest
//! version both speak. See docs/protocol.md, "Versioning", for what may change between versions.

use std::ops::RangeInclusive;

use crate::v1::ClientHello;

/// The protocol versions this crate speaks. Version 1 is the schema in `elastos.proto`.
pub const SUPPORTED_VERSIONS: RangeInclusive<u32> = 1..=1;

impl ClientHello {
    /// The hello of a client that speaks every version in [`SUPPORTED_VERSIONS`].
    pub fn supported() -> Self {
        Self {
            min_version: *SUPPORTED_VERSIONS.start(),
            max_version: *SUPPORTED_VERSIONS.end(),
        }
    }

    /// The highest version in both this offer and [`SUPPORTED_VERSIONS`], or `None` when they do
    /// not overlap or the offer is malformed (`min_version` 0 or above `max_version`); the broker
    /// then says goodbye with INVALID_ARGUMENT.
    pub fn negotiate(&self) -> Option<u32> {
        if !self.is_well_formed() {
            return None;
        }
        let highest = self.max_version.min(*SUPPORTED_VERSIONS.end());
        let lowest = self.min_version.max(*SUPPORTED_VERSIONS.start());
        (lowest <= highest).then_some(highest)
    }

    /// Whether the offer is a range of real versions: `1 <= min_version <= max_version`.
    pub(crate) fn is_well_formed(&self) -> bool {
        self.min_version != 0 && self.min_version <= self.max_version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(min_version: u32, max_version: u32) -> ClientHello {
        ClientHello {
            min_version,
            max_version,
        }
    }

    #[test]
    fn supported_hello_negotiates_the_highest_supported_version() {
        assert_eq!(
            ClientHello::supported().negotiate(),
            Some(*SUPPORTED_VERSIONS.end())
        );
    }

    #[test]
    fn a_newer_client_falls_back_to_a_common_version() {
        assert_eq!(offer(1, 7).negotiate(), Some(1));
    }

    #[test]
    fn no_overlap_or_malformed_offers_negotiate_nothing() {
        for (min, max) in [(2, 9), (0, 0), (0, 1), (3, 1), (u32::MAX, u32::MAX)] {
            assert_eq!(offer(min, max).negotiate(), None, "offer {min}..={max}");
        }
    }
}
