//! The agent address parser (`[<client>:]<user>@<agent>`) and name checks: any string
//! parses or gives a typed error; a parsed address prints back to a string that parses to
//! the same address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pstream_agent::{check_agent_name, check_name, Address, Caller, NamePart};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(address) = Address::parse(text) {
        let printed = address.to_string();
        assert_eq!(Address::parse(&printed).as_ref(), Ok(&address), "{printed}");
        assert_eq!(address.user_address().client(), None);
        if let Some(client) = address.client() {
            assert!(Caller::client(address.user(), client).is_ok());
        }
    }
    let _ = check_agent_name(text);
    // (`check_name` is not for agent names: it debug-asserts that.)
    for part in [
        NamePart::User,
        NamePart::Client,
        NamePart::BundleId,
        NamePart::MetadataKey,
    ] {
        if check_name(part, text).is_ok() {
            assert!(text.len() <= part.max_bytes());
        }
    }
});
