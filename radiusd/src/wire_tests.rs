use super::*;

const SECRET: &[u8] = b"testing123";
const STRICT: DecodeOptions = DecodeOptions {
    require_message_authenticator: true,
    limit_proxy_state: true,
};
const LAX: DecodeOptions = DecodeOptions {
    require_message_authenticator: false,
    limit_proxy_state: false,
};

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(pair, 16).expect("hex digit")
        })
        .collect()
}

/// One-shot MD5 (the RFC 2865 §7.1 test below checks it against the
/// RFC's own Access-Accept).
fn md5_ref(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

/// HMAC-MD5 written out from RFC 2104, independent of the `hmac` crate.
fn hmac_md5_ref(key: &[u8], data: &[u8]) -> [u8; 16] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..16].copy_from_slice(&md5_ref(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let inner: Vec<u8> = k
        .iter()
        .map(|b| b ^ 0x36)
        .chain(data.iter().copied())
        .collect();
    let inner = md5_ref(&inner);
    let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).chain(inner).collect();
    md5_ref(&outer)
}

/// RFC 2865 §5.2 hiding, written out independently of `unhide_password`.
fn hide_password(plain: &[u8], secret: &[u8], ra: &[u8; 16]) -> Vec<u8> {
    let mut padded = plain.to_vec();
    padded.resize(plain.len().div_ceil(16).max(1) * 16, 0);
    let mut out = Vec::new();
    let mut prev = ra.to_vec();
    for block in padded.chunks(16) {
        let b = md5_ref(&[secret, &prev].concat());
        let c: Vec<u8> = block.iter().zip(b).map(|(p, b)| p ^ b).collect();
        out.extend_from_slice(&c);
        prev = c;
    }
    out
}

/// Builds a request by hand: header, then `attrs` in order. With
/// `with_ma`, a Message-Authenticator is inserted first and signed.
fn packet(
    code: u8,
    id: u8,
    ra: [u8; 16],
    attrs: &[(u8, &[u8])],
    with_ma: bool,
    secret: &[u8],
) -> Vec<u8> {
    let mut p = vec![code, id, 0, 0];
    p.extend_from_slice(&ra);
    if with_ma {
        p.extend_from_slice(&[80, 18]);
        p.extend_from_slice(&[0; 16]);
    }
    for (t, v) in attrs {
        p.push(*t);
        p.push(u8::try_from(v.len() + 2).expect("short attribute"));
        p.extend_from_slice(v);
    }
    let len = u16::try_from(p.len()).expect("short packet");
    p[2..4].copy_from_slice(&len.to_be_bytes());
    if with_ma {
        let ma = hmac_md5_ref(secret, &p);
        p[22..38].copy_from_slice(&ma);
    }
    p
}

fn ra(seed: u8) -> [u8; 16] {
    std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
}

fn access_request(attrs: &[(u8, &[u8])]) -> Vec<u8> {
    packet(1, 7, ra(1), attrs, true, SECRET)
}

/// Splits a reply into (type, value) pairs, asserting it is well formed.
fn reply_attrs(reply: &[u8]) -> Vec<(u8, Vec<u8>)> {
    assert!(reply.len() >= 20 && reply.len() <= MAX_PACKET);
    assert_eq!(
        usize::from(u16::from_be_bytes([reply[2], reply[3]])),
        reply.len()
    );
    let mut out = Vec::new();
    let mut i = 20;
    while i < reply.len() {
        let len = usize::from(reply[i + 1]);
        assert!(
            len >= 2 && i + len <= reply.len(),
            "bad reply attribute at {i}"
        );
        out.push((reply[i], reply[i + 2..i + len].to_vec()));
        i += len;
    }
    out
}

/// Checks the Response Authenticator and the reply's
/// Message-Authenticator with the reference functions.
fn assert_reply_signed(reply: &[u8], req_auth: &[u8; 16], secret: &[u8]) {
    let mut with_ra = reply.to_vec();
    with_ra[4..20].copy_from_slice(req_auth);
    let expected_response = md5_ref(&[&with_ra[..], secret].concat());
    assert_eq!(reply[4..20], expected_response, "Response Authenticator");

    assert_eq!(reply[20..22], [80, 18], "Message-Authenticator first");
    let sent: [u8; 16] = reply[22..38].try_into().expect("16 bytes");
    with_ra[22..38].fill(0);
    assert_eq!(
        sent,
        hmac_md5_ref(secret, &with_ra),
        "Message-Authenticator"
    );
}

// ---- known answers -------------------------------------------------

const RFC2865_7_1_REQUEST: &str = "01 00 00 38 0f 40 3f 94 73 97 80 57 bd 83 d5 cb
    98 f4 22 7a 01 06 6e 65 6d 6f 02 12 0d be 70 8d 93 d4 13 ce 31 96 e4 3f 78 2a 0a ee
    04 06 c0 a8 01 10 05 06 00 00 00 03";

#[test]
fn rfc2865_example_request_decodes() {
    let req = decode_request(&hex(RFC2865_7_1_REQUEST), b"xyzzy5461", LAX).expect("decodes");
    assert_eq!(req.code, RequestCode::AccessRequest);
    assert_eq!(req.identifier, 0);
    assert_eq!(req.user_name.as_deref(), Some("nemo"));
    assert_eq!(
        req.user_password.as_deref().map(Vec::as_slice),
        Some(&b"arctangent"[..])
    );
    assert_eq!(
        req.nas_ip_address,
        Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 16)))
    );
    assert!(!req.has_message_authenticator);
    assert!(req.proxy_state.is_empty());
}

#[test]
fn rfc2865_example_wrong_secret_gives_other_password() {
    let req = decode_request(&hex(RFC2865_7_1_REQUEST), b"wrong", LAX).expect("decodes");
    assert_ne!(
        req.user_password.as_deref().map(Vec::as_slice),
        Some(&b"arctangent"[..])
    );
}

#[test]
fn rfc2865_example_needs_message_authenticator_when_required() {
    let err = decode_request(&hex(RFC2865_7_1_REQUEST), b"xyzzy5461", STRICT);
    assert_eq!(err.map(|_| ()), Err(WireError::MissingMessageAuthenticator));
}

#[test]
fn rfc2865_example_response_authenticator_matches_reference() {
    // Validates md5_ref, which the encode tests rely on: the RFC's own
    // Access-Accept must verify under it.
    let request = hex(RFC2865_7_1_REQUEST);
    let accept = hex("02 00 00 26 86 fe 22 0e 76 24 ba 2a 10 05 f6 bf 9b 55 e0 b2
         06 06 00 00 00 01 0f 06 00 00 00 00 0e 06 c0 a8 01 03");
    let mut signed = accept.clone();
    signed[4..20].copy_from_slice(&request[4..20]);
    signed.extend_from_slice(b"xyzzy5461");
    assert_eq!(md5_ref(&signed), accept[4..20]);
    assert!(radius::core::packet::Packet::is_authentic_response(
        &accept,
        &request,
        b"xyzzy5461"
    ));
}

#[test]
fn hmac_reference_matches_rfc2202() {
    // RFC 2202 test case 2 for HMAC-MD5, and the case with a 80-byte key.
    assert_eq!(
        hmac_md5_ref(b"Jefe", b"what do ya want for nothing?").to_vec(),
        hex("750c783e6ab0b503eaa86e310a5db738")
    );
    assert_eq!(
        hmac_md5_ref(
            &[0xaa; 80],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        )
        .to_vec(),
        hex("6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd")
    );
    assert_eq!(
        hmac_md5(b"Jefe", &[b"what do ya ", b"want for nothing?"]).to_vec(),
        hex("750c783e6ab0b503eaa86e310a5db738")
    );
}

#[test]
fn decodes_hand_built_request() {
    let auth = ra(9);
    let hidden = hide_password(b"correct horse battery staple", SECRET, &auth);
    assert_eq!(hidden.len(), 32);
    let p = packet(
        1,
        42,
        auth,
        &[
            (1, b"alice"),
            (2, &hidden),
            (24, b"\x00state\xff"),
            (32, b"vpn-gw-1"),
            (
                95,
                &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            ),
            (31, b"198.51.100.7"),
            (33, b"first"),
            (26, b"\x00\x00\x00\x09\x01\x03ab"),
            (33, b"second"),
        ],
        true,
        SECRET,
    );
    let req = decode_request(&p, SECRET, STRICT).expect("decodes");
    assert_eq!(req.identifier, 42);
    assert_eq!(req.authenticator, auth);
    assert_eq!(req.user_name.as_deref(), Some("alice"));
    assert_eq!(
        req.user_password.as_deref().map(Vec::as_slice),
        Some(&b"correct horse battery staple"[..])
    );
    assert_eq!(req.state.as_deref(), Some(&b"\x00state\xff"[..]));
    assert_eq!(req.nas_identifier.as_deref(), Some("vpn-gw-1"));
    assert_eq!(req.nas_ip_address, Some("2001:db8::1".parse().expect("ip")));
    assert_eq!(req.calling_station_id.as_deref(), Some("198.51.100.7"));
    assert_eq!(req.proxy_state, vec![b"first".to_vec(), b"second".to_vec()]);
    assert!(req.has_message_authenticator);
}

#[test]
fn decodes_request_built_by_radius_crate() {
    use radius::core::code::Code;
    use radius::core::packet::Packet;
    use radius::core::rfc2865;
    let mut p = Packet::new_with_identifier(Code::AccessRequest, SECRET, 5);
    rfc2865::add_user_name(&mut p, "bob");
    rfc2865::add_user_password(&mut p, b"0123456789abcdef0123").expect("password");
    rfc2865::add_proxy_state(&mut p, b"ps");
    let auth: [u8; 16] = p.get_authenticator().as_slice().try_into().expect("16");
    let bytes = p.encode().expect("encodes");
    let req = decode_request(&bytes, SECRET, LAX).expect("decodes");
    assert_eq!(req.authenticator, auth);
    assert_eq!(req.user_name.as_deref(), Some("bob"));
    assert_eq!(
        req.user_password.as_deref().map(Vec::as_slice),
        Some(&b"0123456789abcdef0123"[..])
    );
    assert_eq!(req.proxy_state, vec![b"ps".to_vec()]);
}

#[test]
fn password_keeps_inner_nul_and_strips_padding() {
    let auth = ra(3);
    let hidden = hide_password(b"a\0b", SECRET, &auth);
    let req = decode_request(
        &packet(1, 1, auth, &[(2, &hidden)], true, SECRET),
        SECRET,
        STRICT,
    )
    .expect("decodes");
    assert_eq!(
        req.user_password.as_deref().map(Vec::as_slice),
        Some(&b"a\0b"[..])
    );

    // 128 bytes, the maximum, with no padding at all.
    let long = [b'x'; 128];
    let hidden = hide_password(&long, SECRET, &auth);
    let req = decode_request(
        &packet(1, 1, auth, &[(2, &hidden)], true, SECRET),
        SECRET,
        STRICT,
    )
    .expect("decodes");
    assert_eq!(
        req.user_password.as_deref().map(Vec::as_slice),
        Some(&long[..])
    );
}

#[test]
fn debug_hides_password() {
    let auth = ra(4);
    let hidden = hide_password(b"hunter2-secret", SECRET, &auth);
    let req = decode_request(
        &packet(1, 1, auth, &[(1, b"al"), (2, &hidden)], true, SECRET),
        SECRET,
        STRICT,
    )
    .expect("decodes");
    let shown = format!("{req:?}");
    assert!(shown.contains("user_password: Some(..)"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("104, 117, 110"), "{shown}");
}

// ---- Message-Authenticator and options ----------------------------

#[test]
fn wrong_secret_fails_message_authenticator() {
    let p = access_request(&[(1, b"alice")]);
    assert!(decode_request(&p, SECRET, STRICT).is_ok());
    for opts in [STRICT, LAX] {
        assert_eq!(
            decode_request(&p, b"testing124", opts).map(|_| ()),
            Err(WireError::BadMessageAuthenticator)
        );
    }
}

#[test]
fn any_changed_byte_fails_message_authenticator() {
    let p = access_request(&[(1, b"alice"), (24, b"st")]);
    for i in 0..p.len() {
        let mut q = p.clone();
        q[i] ^= 0x01;
        // Strict: flipping the type octet of the Message-Authenticator
        // turns it into another attribute, which only the requirement
        // catches (the BlastRADIUS downgrade).
        let result = decode_request(&q, SECRET, STRICT);
        assert!(result.is_err(), "flipping byte {i} went unnoticed");
    }
}

#[test]
fn message_authenticator_anywhere_in_packet_verifies() {
    let mut p = packet(
        1,
        3,
        ra(5),
        &[(1, b"alice"), (80, &[0; 16]), (33, b"x")],
        false,
        SECRET,
    );
    let ma = hmac_md5_ref(SECRET, &p);
    let at = 20 + 7 + 2;
    p[at..at + 16].copy_from_slice(&ma);
    let req = decode_request(&p, SECRET, STRICT).expect("decodes");
    assert!(req.has_message_authenticator);
}

#[test]
fn padding_after_length_field_is_ignored() {
    let mut p = access_request(&[(1, b"alice")]);
    p.extend_from_slice(&[0xee; 100]);
    let req = decode_request(&p, SECRET, STRICT).expect("decodes");
    assert_eq!(req.user_name.as_deref(), Some("alice"));
}

#[test]
fn options_decide_on_missing_message_authenticator() {
    let plain = packet(1, 1, ra(1), &[(1, b"alice")], false, SECRET);
    let proxied = packet(1, 1, ra(1), &[(1, b"alice"), (33, b"p")], false, SECRET);
    let eap = packet(
        1,
        1,
        ra(1),
        &[(1, b"alice"), (79, b"\x02\x00\x00\x05\x01")],
        false,
        SECRET,
    );
    let limit_only = DecodeOptions {
        require_message_authenticator: false,
        limit_proxy_state: true,
    };
    assert!(decode_request(&plain, SECRET, LAX).is_ok());
    assert!(decode_request(&plain, SECRET, limit_only).is_ok());
    assert!(decode_request(&proxied, SECRET, LAX).is_ok());
    let missing = Err(WireError::MissingMessageAuthenticator);
    assert_eq!(decode_request(&plain, SECRET, STRICT).map(|_| ()), missing);
    assert_eq!(decode_request(&eap, SECRET, LAX).map(|_| ()), missing);
    assert_eq!(
        decode_request(&proxied, SECRET, limit_only).map(|_| ()),
        Err(WireError::ProxyStateWithoutAuthenticator)
    );
    // With a Message-Authenticator, Proxy-State is fine.
    let signed = packet(1, 1, ra(1), &[(1, b"alice"), (33, b"p")], true, SECRET);
    assert!(decode_request(&signed, SECRET, limit_only).is_ok());
}

#[test]
fn status_server_always_needs_message_authenticator() {
    let bare = packet(12, 9, ra(2), &[], false, SECRET);
    assert_eq!(
        decode_request(&bare, SECRET, LAX).map(|_| ()),
        Err(WireError::MissingMessageAuthenticator)
    );
    let signed = packet(12, 9, ra(2), &[], true, SECRET);
    let req = decode_request(&signed, SECRET, LAX).expect("decodes");
    assert_eq!(req.code, RequestCode::StatusServer);
    assert_eq!(
        decode_request(&signed, b"other", LAX).map(|_| ()),
        Err(WireError::BadMessageAuthenticator)
    );
}

#[test]
fn other_codes_are_unsupported() {
    for code in [0u8, 2, 3, 4, 5, 11, 13, 40, 43, 255] {
        let p = packet(code, 1, ra(1), &[(1, b"alice")], true, SECRET);
        assert_eq!(
            decode_request(&p, SECRET, LAX).map(|_| ()),
            Err(WireError::UnsupportedCode(code))
        );
    }
}

// ---- malformed packets ---------------------------------------------

#[derive(Debug)]
enum Expect {
    Malformed(&'static str),
    Password,
}

#[test]
fn malformed_packets_are_refused() {
    let header = |len: u16| {
        let mut p = vec![1, 1];
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&ra(1));
        p
    };
    let with_len = |mut p: Vec<u8>| {
        let len = u16::try_from(p.len()).expect("short");
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p
    };
    let raw = |attrs: &[u8]| {
        let mut p = header(0);
        p.extend_from_slice(attrs);
        with_len(p)
    };
    let valid = access_request(&[(1, b"alice")]);
    let mut oversized = valid.clone();
    oversized.resize(5000, 0);
    let two_ma = {
        let mut p = header(0);
        p.extend_from_slice(&[80, 18]);
        p.extend_from_slice(&[0; 16]);
        p.extend_from_slice(&[80, 18]);
        p.extend_from_slice(&[0; 16]);
        with_len(p)
    };
    let password = |n: usize| {
        raw(&[
            &[2, u8::try_from(n + 2).expect("short")][..],
            &vec![0x55; n],
        ]
        .concat())
    };
    let big_password = {
        // 144 bytes does not fit one attribute's length octet with
        // room to spare, but 146 does: 144 + 2.
        password(144)
    };

    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        (
            "empty buffer",
            vec![],
            Expect::Malformed("shorter than the 20-byte header"),
        ),
        (
            "truncated header",
            valid[..19].to_vec(),
            Expect::Malformed("shorter than the 20-byte header"),
        ),
        (
            "length field below 20",
            header(10),
            Expect::Malformed("length field 10 below minimum 20"),
        ),
        (
            "length field zero",
            header(0),
            Expect::Malformed("length field 0 below minimum 20"),
        ),
        (
            "length field above 4096",
            {
                let mut p = header(4097);
                p.resize(4096, 0);
                p
            },
            Expect::Malformed("length field 4097 above maximum 4096"),
        ),
        (
            "length field beyond buffer",
            {
                let mut p = valid.clone();
                p.truncate(valid.len() - 1);
                p
            },
            Expect::Malformed("exceeds the"),
        ),
        (
            "oversized buffer",
            oversized,
            Expect::Malformed("datagram of 5000 bytes exceeds maximum 4096"),
        ),
        (
            "zero-length attribute",
            raw(&[1, 0, b'a']),
            Expect::Malformed("attribute 1 at offset 20 has length 0"),
        ),
        (
            "attribute length 1",
            raw(&[1, 1, b'a']),
            Expect::Malformed("attribute 1 at offset 20 has length 1"),
        ),
        (
            "attribute past the end",
            raw(&[1, 9, b'a', b'b']),
            Expect::Malformed("attribute 1 at offset 20 has length 9, running past"),
        ),
        (
            "lone attribute type octet",
            raw(&[1, 3, b'a', 33]),
            Expect::Malformed("attribute at offset 23 truncated"),
        ),
        ("User-Password of 15 bytes", password(15), Expect::Password),
        ("User-Password of 17 bytes", password(17), Expect::Password),
        ("User-Password of 0 bytes", password(0), Expect::Password),
        ("User-Password of 144 bytes", big_password, Expect::Password),
        (
            "Message-Authenticator of 17 bytes",
            raw(&[&[80, 17][..], &[0; 15]].concat()),
            Expect::Malformed("attribute 80 at offset 20 has length 17, expected 18"),
        ),
        (
            "Message-Authenticator of 19 bytes",
            raw(&[&[80, 19][..], &[0; 17]].concat()),
            Expect::Malformed("has length 19, expected 18"),
        ),
        (
            "two Message-Authenticators",
            two_ma,
            Expect::Malformed("attribute 80 at offset 38 repeats"),
        ),
        (
            "two User-Names",
            raw(&[1, 3, b'a', 1, 3, b'b']),
            Expect::Malformed("attribute 1 at offset 23 repeats"),
        ),
        (
            "two States",
            raw(&[24, 3, b'a', 24, 3, b'b']),
            Expect::Malformed("attribute 24 at offset 23 repeats"),
        ),
        (
            "two User-Passwords",
            raw(&[&[2, 18][..], &[0; 16], &[2, 18], &[0; 16]].concat()),
            Expect::Malformed("attribute 2 at offset 38 repeats"),
        ),
        (
            "NAS-IP-Address of 3 bytes",
            raw(&[4, 5, 1, 2, 3]),
            Expect::Malformed("attribute 4 at offset 20 has length 5, expected 6"),
        ),
        (
            "NAS-IPv6-Address of 4 bytes",
            raw(&[95, 6, 1, 2, 3, 4]),
            Expect::Malformed("attribute 95 at offset 20 has length 6, expected 18"),
        ),
        (
            "User-Name not UTF-8",
            raw(&[1, 4, 0xff, 0xfe]),
            Expect::Malformed("attribute 1 at offset 20 is not UTF-8"),
        ),
        (
            "Proxy-States too big to echo",
            raw(&[
                [&[33, 255][..], &[7; 253]].concat().repeat(15),
                vec![33, 251],
                vec![7; 249],
            ]
            .concat()),
            Expect::Malformed("Proxy-State attributes take 4076 bytes"),
        ),
    ];
    for (name, bytes, expect) in cases {
        for opts in [STRICT, LAX] {
            let got = decode_request(&bytes, SECRET, opts).map(|_| ());
            match (&expect, &got) {
                (Expect::Malformed(needle), Err(WireError::Malformed(msg))) => {
                    assert!(
                        msg.contains(needle),
                        "{name}: message {msg:?} lacks {needle:?}"
                    )
                }
                (Expect::Password, Err(WireError::BadUserPassword(_))) => {}
                _ => panic!("{name}: expected {expect:?}, got {got:?}"),
            }
        }
    }
}

// ---- encoding ------------------------------------------------------

fn decided(code: ReplyCode) -> Reply {
    Reply {
        code: Some(code),
        ..Reply::default()
    }
}

fn decoded(attrs: &[(u8, &[u8])]) -> Request {
    decode_request(&access_request(attrs), SECRET, STRICT).expect("decodes")
}

#[test]
fn accept_is_signed_and_carries_message_authenticator_first() {
    let req = decoded(&[(1, b"alice")]);
    let bytes = encode_reply(&req, &decided(ReplyCode::Accept), SECRET);
    assert_eq!(bytes[0], 2);
    assert_eq!(bytes[1], req.identifier);
    assert_eq!(bytes.len(), 38);
    assert_reply_signed(&bytes, &req.authenticator, SECRET);
    let request_bytes = access_request(&[(1, b"alice")]);
    assert!(radius::core::packet::Packet::is_authentic_response(
        &bytes,
        &request_bytes,
        SECRET
    ));
    assert!(!radius::core::packet::Packet::is_authentic_response(
        &bytes,
        &request_bytes,
        b"nope"
    ));
}

#[test]
fn reply_without_code_is_a_reject() {
    let req = decoded(&[(1, b"alice")]);
    let undecided = Reply {
        reply_message: Some("hm".into()),
        state: Some(b"s".to_vec()),
        session_timeout: Some(5),
        ..Reply::default()
    };
    let bytes = encode_reply(&req, &undecided, SECRET);
    assert_eq!(bytes[0], 3);
    assert_reply_signed(&bytes, &req.authenticator, SECRET);
    let types: Vec<u8> = reply_attrs(&bytes).iter().map(|(t, _)| *t).collect();
    assert_eq!(types, [80, 18]);
}

#[test]
fn challenge_carries_attributes_in_order_and_echoes_proxy_state() {
    let req = decoded(&[
        (1, b"alice"),
        (33, b"one"),
        (24, b"old"),
        (33, b"two"),
        (33, b"three"),
    ]);
    let reply = Reply {
        code: Some(ReplyCode::Challenge),
        reply_message: Some("Enter the code sent to ******1234".into()),
        state: Some(b"new-state".to_vec()),
        session_timeout: Some(300),
    };
    let bytes = encode_reply(&req, &reply, SECRET);
    assert_eq!(bytes[0], 11);
    assert_reply_signed(&bytes, &req.authenticator, SECRET);
    let attrs = reply_attrs(&bytes);
    let types: Vec<u8> = attrs.iter().map(|(t, _)| *t).collect();
    assert_eq!(types, [80, 18, 24, 27, 33, 33, 33]);
    assert_eq!(attrs[1].1, b"Enter the code sent to ******1234");
    assert_eq!(attrs[2].1, b"new-state");
    assert_eq!(attrs[3].1, 300u32.to_be_bytes());
    assert_eq!(attrs[4].1, b"one");
    assert_eq!(attrs[5].1, b"two");
    assert_eq!(attrs[6].1, b"three");
}

#[test]
fn reject_leaves_out_state_and_session_timeout() {
    let req = decoded(&[(1, b"alice"), (33, b"p")]);
    let reply = Reply {
        code: Some(ReplyCode::Reject),
        reply_message: Some("Wrong code".into()),
        state: Some(b"s".to_vec()),
        session_timeout: Some(30),
    };
    let bytes = encode_reply(&req, &reply, SECRET);
    assert_eq!(bytes[0], 3);
    assert_reply_signed(&bytes, &req.authenticator, SECRET);
    let types: Vec<u8> = reply_attrs(&bytes).iter().map(|(t, _)| *t).collect();
    assert_eq!(types, [80, 18, 33]);
}

#[test]
fn status_server_is_answered_with_accept() {
    let p = packet(12, 200, ra(7), &[], true, SECRET);
    let req = decode_request(&p, SECRET, STRICT).expect("decodes");
    for code in [ReplyCode::Accept, ReplyCode::Reject, ReplyCode::Challenge] {
        let bytes = encode_reply(&req, &decided(code), SECRET);
        assert_eq!(bytes[..2], [2, 200]);
        assert_reply_signed(&bytes, &req.authenticator, SECRET);
    }
}

#[test]
fn long_reply_message_is_split_at_char_boundaries() {
    let req = decoded(&[(1, b"alice")]);
    // 300 two-byte characters: 600 bytes, split 252 + 252 + 96.
    let message: String = "é".repeat(300);
    let reply = Reply {
        reply_message: Some(message.clone()),
        ..decided(ReplyCode::Reject)
    };
    let bytes = encode_reply(&req, &reply, SECRET);
    assert_reply_signed(&bytes, &req.authenticator, SECRET);
    let parts: Vec<Vec<u8>> = reply_attrs(&bytes)
        .into_iter()
        .filter(|(t, _)| *t == 18)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        parts.iter().map(Vec::len).collect::<Vec<_>>(),
        [252, 252, 96]
    );
    for part in &parts {
        assert!(std::str::from_utf8(part).is_ok());
    }
    assert_eq!(parts.concat(), message.as_bytes());

    let ascii = "x".repeat(600);
    let reply = Reply {
        reply_message: Some(ascii),
        ..decided(ReplyCode::Reject)
    };
    let lens: Vec<usize> = reply_attrs(&encode_reply(&req, &reply, SECRET))
        .into_iter()
        .filter(|(t, _)| *t == 18)
        .map(|(_, v)| v.len())
        .collect();
    assert_eq!(lens, [253, 253, 94]);
}

#[test]
fn huge_reply_message_is_cut_to_fit() {
    let proxies: Vec<Vec<u8>> = (0..10).map(|i| vec![i; 200]).collect();
    let attrs: Vec<(u8, &[u8])> = proxies.iter().map(|p| (33, p.as_slice())).collect();
    let req = decoded(&attrs);
    let reply = Reply {
        code: Some(ReplyCode::Challenge),
        reply_message: Some("y".repeat(10_000)),
        state: Some(vec![1; 253]),
        session_timeout: Some(60),
    };
    let bytes = encode_reply(&req, &reply, SECRET);
    assert!(
        bytes.len() <= MAX_PACKET && bytes.len() > MAX_PACKET - 3,
        "{}",
        bytes.len()
    );
    assert_eq!(bytes[0], 11);
    assert_reply_signed(&bytes, &req.authenticator, SECRET);
    let attrs = reply_attrs(&bytes);
    assert_eq!(attrs.iter().filter(|(t, _)| *t == 33).count(), 10);
    assert_eq!(attrs.iter().filter(|(t, _)| *t == 24).count(), 1);
}

#[test]
fn unsendable_state_fails_closed() {
    let req = decoded(&[(1, b"alice"), (33, b"p")]);
    for state in [vec![], vec![0; 254]] {
        let reply = Reply {
            code: Some(ReplyCode::Challenge),
            reply_message: Some("code?".into()),
            state: Some(state),
            session_timeout: Some(60),
        };
        let bytes = encode_reply(&req, &reply, SECRET);
        assert_eq!(bytes[0], 3);
        assert_reply_signed(&bytes, &req.authenticator, SECRET);
        let types: Vec<u8> = reply_attrs(&bytes).iter().map(|(t, _)| *t).collect();
        assert_eq!(types, [80, 33]);
    }
}

#[test]
fn state_that_does_not_fit_beside_proxy_state_fails_closed() {
    // Proxy-States fill the packet up to the last byte a Reject can use.
    let mut proxies: Vec<Vec<u8>> = (0..15).map(|i| vec![i; 253]).collect();
    proxies.push(vec![99; PROXY_STATE_BUDGET - 15 * 255 - 2]);
    let attrs: Vec<(u8, &[u8])> = proxies.iter().map(|p| (33, p.as_slice())).collect();
    let p = packet(1, 1, ra(1), &attrs, false, SECRET);
    let req = decode_request(&p, SECRET, LAX).expect("decodes");
    let reply = Reply {
        state: Some(b"s".to_vec()),
        ..decided(ReplyCode::Challenge)
    };
    let bytes = encode_reply(&req, &reply, SECRET);
    assert_eq!(bytes[0], 3);
    assert_eq!(bytes.len(), MAX_PACKET);
    assert_reply_signed(&bytes, &req.authenticator, SECRET);
}

#[test]
fn round_trip_with_right_and_wrong_secret() {
    let auth = ra(11);
    let hidden = hide_password(b"pw", SECRET, &auth);
    let p = packet(
        1,
        77,
        auth,
        &[(1, b"carol"), (2, &hidden), (33, b"z")],
        true,
        SECRET,
    );
    let req = decode_request(&p, SECRET, STRICT).expect("decodes");
    let reply = Reply {
        code: Some(ReplyCode::Challenge),
        reply_message: Some("Code?".into()),
        state: Some(b"abc".to_vec()),
        session_timeout: Some(120),
    };
    let bytes = encode_reply(&req, &reply, SECRET);
    assert!(radius::core::packet::Packet::is_authentic_response(
        &bytes, &p, SECRET
    ));
    assert!(!radius::core::packet::Packet::is_authentic_response(
        &bytes,
        &p,
        b"testing124"
    ));
    assert_eq!(
        decode_request(&p, b"testing124", STRICT).map(|_| ()),
        Err(WireError::BadMessageAuthenticator)
    );
    // A reply is not a request.
    assert_eq!(
        decode_request(&bytes, SECRET, LAX).map(|_| ()),
        Err(WireError::UnsupportedCode(11))
    );
}

#[test]
fn sixty_four_byte_secret_and_long_password_work() {
    // Secrets longer than the 16-byte MD5 block and the HMAC block
    // boundary, and a password of several 16-byte blocks.
    let secret: Vec<u8> = (0..64u8).map(|i| b'!' + (i % 90)).collect();
    let auth = ra(21);
    let password = b"correct horse battery staple, and more";
    let hidden = hide_password(password, &secret, &auth);
    let p = packet(1, 9, auth, &[(1, b"dave"), (2, &hidden)], true, &secret);
    let req = decode_request(&p, &secret, STRICT).expect("decodes");
    assert_eq!(
        req.user_password.as_deref().map(|v| v.as_slice()),
        Some(&password[..])
    );
    let bytes = encode_reply(&req, &decided(ReplyCode::Accept), &secret);
    assert_reply_signed(&bytes, &req.authenticator, &secret);
    assert!(radius::core::packet::Packet::is_authentic_response(
        &bytes, &p, &secret
    ));
}

// ---- no panics on arbitrary input ---------------------------------

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

#[test]
fn random_and_mutated_input_never_panics() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let auth = ra(13);
    let hidden = hide_password(b"some password", SECRET, &auth);
    let seeds = [
        packet(
            1,
            1,
            auth,
            &[
                (1, b"alice"),
                (2, &hidden),
                (24, b"st"),
                (33, b"p1"),
                (33, b"p2"),
                (4, &[10, 0, 0, 1]),
            ],
            true,
            SECRET,
        ),
        packet(
            1,
            1,
            auth,
            &[
                (1, b"alice"),
                (2, &hidden),
                (24, b"st"),
                (33, b"p1"),
                (95, &[1; 16]),
                (31, b"cs"),
            ],
            false,
            SECRET,
        ),
        packet(12, 1, auth, &[], true, SECRET),
        hex(RFC2865_7_1_REQUEST),
    ];
    let options = [STRICT, LAX];
    let mut decoded_ok = 0;
    for round in 0..20_000 {
        let buf = match round % 4 {
            0 => {
                let len = rng.below(MAX_PACKET + 200);
                (0..len).map(|_| rng.byte()).collect::<Vec<u8>>()
            }
            1 => {
                // Random attributes behind a plausible header.
                let mut p = vec![if rng.below(2) == 0 { 1 } else { 12 }, rng.byte(), 0, 0];
                p.extend_from_slice(&auth);
                for _ in 0..rng.below(12) {
                    let typ = [1, 2, 4, 24, 31, 32, 33, 79, 80, 95, rng.byte()][rng.below(11)];
                    let len = rng.below(260);
                    p.push(typ);
                    p.push(len as u8);
                    p.extend((0..len.saturating_sub(2)).map(|_| rng.byte()));
                }
                let len = if rng.below(4) == 0 {
                    rng.byte() as usize * 17
                } else {
                    p.len()
                };
                let len = u16::try_from(len).unwrap_or(u16::MAX);
                p[2..4].copy_from_slice(&len.to_be_bytes());
                p
            }
            _ => {
                let mut p = seeds[rng.below(seeds.len())].clone();
                for _ in 0..1 + rng.below(4) {
                    match rng.below(5) {
                        0 if !p.is_empty() => {
                            let i = rng.below(p.len());
                            p[i] = rng.byte();
                        }
                        1 if !p.is_empty() => p.truncate(rng.below(p.len())),
                        2 => p.extend((0..rng.below(40)).map(|_| rng.byte())),
                        3 if p.len() > 4 => {
                            let len = u16::try_from(rng.below(p.len() + 40)).unwrap_or(0);
                            p[2..4].copy_from_slice(&len.to_be_bytes());
                        }
                        _ if p.len() > 21 => {
                            let i = 20 + rng.below(p.len() - 20);
                            p.remove(i);
                            let len = u16::try_from(p.len()).unwrap_or(0);
                            p[2..4].copy_from_slice(&len.to_be_bytes());
                        }
                        _ => {}
                    }
                }
                p
            }
        };
        let secret: &[u8] = if rng.below(8) == 0 { b"" } else { SECRET };
        if let Ok(req) = decode_request(&buf, secret, options[rng.below(2)]) {
            decoded_ok += 1;
            let reply = Reply {
                code: [
                    None,
                    Some(ReplyCode::Accept),
                    Some(ReplyCode::Reject),
                    Some(ReplyCode::Challenge),
                ][rng.below(4)],
                reply_message: Some("m".repeat(rng.below(5000))),
                state: Some((0..rng.below(300)).map(|_| rng.byte()).collect()),
                session_timeout: Some(rng.next() as u32),
            };
            let bytes = encode_reply(&req, &reply, secret);
            reply_attrs(&bytes);
            assert_reply_signed(&bytes, &req.authenticator, secret);
        }
    }
    // The mutations must leave enough valid packets to exercise encoding.
    assert!(decoded_ok > 500, "only {decoded_ok} packets decoded");
}

// ---- interoperability with FreeRADIUS radclient -------------------

mod radclient {
    use super::*;
    use std::io::Write;
    use std::net::UdpSocket;
    use std::process::{Command, Stdio};
    use std::thread;
    use std::time::Duration;

    /// How the test responder answers.
    enum Answer {
        Reply(Reply),
        /// Sends an Accept whose Message-Authenticator is wrong but
        /// whose Response Authenticator is right.
        CorruptMessageAuthenticator,
    }

    /// Answers one request on 127.0.0.1 while `radclient` sends
    /// `input`; returns radclient's output (stdout and stderr) and
    /// exit status, and the decoded request if one arrived.
    fn exchange(command: &str, input: &str, answer: Answer) -> (String, bool, Option<Request>) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let port = socket.local_addr().expect("addr").port();
        let responder = thread::spawn(move || {
            let mut buf = [0u8; MAX_PACKET + 1];
            let (n, peer) = socket.recv_from(&mut buf).ok()?;
            let req =
                decode_request(&buf[..n], SECRET, STRICT).expect("radclient's packet decodes");
            let bytes = match answer {
                Answer::Reply(reply) => encode_reply(&req, &reply, SECRET),
                Answer::CorruptMessageAuthenticator => {
                    let mut bytes = encode_reply(&req, &decided(ReplyCode::Accept), SECRET);
                    bytes[22] ^= 0xff;
                    bytes[4..20].copy_from_slice(&req.authenticator);
                    let response = md5_ref(&[&bytes[..], SECRET].concat());
                    bytes[4..20].copy_from_slice(&response);
                    bytes
                }
            };
            socket.send_to(&bytes, peer).expect("send");
            Some(req)
        });
        let mut child = Command::new("radclient")
            .args([
                "-x",
                "-r",
                "1",
                "-t",
                "2",
                &format!("127.0.0.1:{port}"),
                command,
                "testing123",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("radclient is installed (apt-get install freeradius-utils)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        let output = child.wait_with_output().expect("radclient runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let req = responder.join().expect("responder thread");
        (text, output.status.success(), req)
    }

    #[test]
    fn radclient_accepts_our_access_accept() {
        let (out, ok, req) = exchange(
            "auth",
            "User-Name = alice, User-Password = secret, Message-Authenticator = 0x00\n",
            Answer::Reply(decided(ReplyCode::Accept)),
        );
        assert!(out.contains("Received Access-Accept"), "{out}");
        assert!(ok, "{out}");
        let req = req.expect("request arrived");
        assert_eq!(req.user_name.as_deref(), Some("alice"));
        assert_eq!(
            req.user_password.as_deref().map(Vec::as_slice),
            Some(&b"secret"[..])
        );
        assert!(req.has_message_authenticator);
    }

    #[test]
    fn radclient_accepts_our_challenge_with_proxy_state() {
        let reply = Reply {
            code: Some(ReplyCode::Challenge),
            reply_message: Some("Enter the code sent to ******1234".into()),
            state: Some(b"\x01\x02state".to_vec()),
            session_timeout: Some(90),
        };
        let (out, _, req) = exchange(
            "auth",
            "User-Name = bob, User-Password = \"a rather long password!\", \
             Message-Authenticator = 0x00, Proxy-State = 0x0a0b, Proxy-State = 0x0c\n",
            Answer::Reply(reply),
        );
        assert!(out.contains("Received Access-Challenge"), "{out}");
        assert!(
            out.contains("Reply-Message = \"Enter the code sent to ******1234\""),
            "{out}"
        );
        assert!(out.contains("State = 0x01027374617465"), "{out}");
        assert!(out.contains("Session-Timeout = 90"), "{out}");
        let req = req.expect("request arrived");
        assert_eq!(
            req.user_password.as_deref().map(Vec::as_slice),
            Some(&b"a rather long password!"[..])
        );
        assert_eq!(req.proxy_state, vec![vec![0x0a, 0x0b], vec![0x0c]]);
    }

    #[test]
    fn radclient_status_server_gets_accept() {
        let (out, ok, req) = exchange(
            "status",
            "Message-Authenticator = 0x00\n",
            Answer::Reply(decided(ReplyCode::Accept)),
        );
        assert!(out.contains("Received Access-Accept"), "{out}");
        assert!(ok, "{out}");
        assert_eq!(
            req.expect("request arrived").code,
            RequestCode::StatusServer
        );
    }

    #[test]
    fn radclient_refuses_a_bad_reply_message_authenticator() {
        // Shows radclient really checks the Message-Authenticator we
        // send: with only that corrupted, the reply is dropped.
        let (out, ok, _) = exchange(
            "auth",
            "User-Name = alice, User-Password = secret, Message-Authenticator = 0x00\n",
            Answer::CorruptMessageAuthenticator,
        );
        assert!(out.contains("invalid Message-Authenticator"), "{out}");
        assert!(!out.contains("Received Access-Accept"), "{out}");
        assert!(!ok, "{out}");
    }
}
