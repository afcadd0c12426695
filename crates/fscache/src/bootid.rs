//! The application boot id, computed exactly as osbuild does.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Where Linux publishes the kernel's boot id.
pub const KERNEL_BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The app boot id for a kernel boot id and an application id:
/// `HMAC-SHA256(key = kernel_boot_id stripped of " \t\r\n", msg = appid)`,
/// first 16 bytes, then `b[6] = (b[6] & 0x0f) | 0x40` and
/// `b[8] = (b[6] & 0x3f) | 0x80` — osbuild reads `b[6]` in the second
/// step, and compatibility keeps that — as 32 lower-case hex digits.
///
/// ```
/// let id = fscache::app_boot_id("17840625-895a-4b7f-b351-37d6bb3fb3a9\n", "osbuild");
/// assert_eq!(id, "8752c536f0b24ab98a4a7023dd65e444");
/// ```
pub fn app_boot_id(kernel_boot_id: &str, appid: &str) -> String {
    let key = kernel_boot_id.trim_matches([' ', '\t', '\r', '\n']);
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(appid.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[6] & 0x3f) | 0x80;
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The app boot id of the running boot, from [`KERNEL_BOOT_ID`].
///
/// # Errors
///
/// Reading the kernel's boot id failed.
pub fn current_app_boot_id(appid: &str) -> std::io::Result<String> {
    let kernel = std::fs::read_to_string(KERNEL_BOOT_ID)?;
    Ok(app_boot_id(&kernel, appid))
}
