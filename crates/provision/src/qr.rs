//! A QR code drawn with Unicode half blocks, for phones to scan a wg-quick config.

use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};

use crate::ProvisionError;

/// Draws `text` as a QR code, two modules per character cell (`▀`, `▄`, `█`, space), with the
/// standard 4-module quiet zone and low error correction, one line per pair of module rows, each line ending in `\n`.
///
/// Made for the usual light-text-on-dark terminal, like `qrencode -t utf8`: the code's dark
/// modules are left as spaces (the dark background) and the light ones, the quiet zone
/// included, are drawn as blocks, so the phone sees dark on light.
pub fn qr_terminal(text: &str) -> Result<String, ProvisionError> {
    // Low error correction: a screen is not a scratched sticker, and the code stays small
    // enough (under 80 columns for an add-peer config) to fit a terminal.
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::L).map_err(|e| {
        ProvisionError::Qr {
            len: text.len(),
            reason: e.to_string(),
        }
    })?;
    let mut out = code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build();
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_square_code_with_a_light_quiet_zone() {
        let text = "[Interface]\nPrivateKey = x\nAddress = 10.77.0.3/24\n";
        let qr = qr_terminal(text).unwrap();
        let lines: Vec<&str> = qr.lines().collect();
        let width = lines[0].chars().count();
        // Version 1 is 21 modules; plus 4 quiet modules each side.
        assert!(width >= 29 && (width - 29).is_multiple_of(4), "{width}");
        assert_eq!(lines.len(), width.div_ceil(2));
        for l in &lines {
            assert_eq!(l.chars().count(), width);
            assert!(l.chars().all(|c| matches!(c, ' ' | '▀' | '▄' | '█')));
        }
        // Quiet zone: the first two lines are all light (blocks), as are both edge columns.
        assert!(lines[0].chars().all(|c| c == '█') && lines[1].chars().all(|c| c == '█'));
        assert!(lines[..lines.len() - 1]
            .iter()
            .all(|l| l.starts_with("████") && l.ends_with("████")));
        // Finder pattern: dark modules exist.
        assert!(qr.contains(' ') || qr.contains('▀') || qr.contains('▄'));
    }

    #[test]
    fn too_long_text_is_an_error() {
        let e = qr_terminal(&"x".repeat(4000)).unwrap_err();
        assert!(
            e.to_string().contains("4000 bytes") && e.to_string().contains("fix:"),
            "{e}"
        );
    }
}
