//! Accounts on a real database: setup races, owner guards, invitations, sessions and the sign-in
//! limit as the store enforces them (the HTTP layer is tested in the server's `access` tests).

use groundwork_store::accounts::{self, AcceptOutcome, LoginOutcome, Role, Scope};
use groundwork_store::audit::Who;
use groundwork_store::testing::TestDb;
use groundwork_store::{DEFAULT_ORG_ID, Error};

const PASSWORD: &str = "a long password";

#[tokio::test]
async fn of_two_racing_setups_exactly_one_wins() {
    let db = TestDb::new().await.unwrap();
    let who = Who::cli();
    let (a, b) = tokio::join!(
        accounts::setup(&db.pool, &who, "a@example.org", PASSWORD, None),
        accounts::setup(&db.pool, &who, "b@example.org", PASSWORD, None),
    );
    assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
    let lost = if a.is_ok() { b } else { a };
    assert!(matches!(lost, Err(Error::Conflict(_))));
    assert!(
        accounts::setup(&db.pool, &who, "c@example.org", PASSWORD, None)
            .await
            .is_err(),
        "setup stays closed"
    );
    let members = accounts::members(&db.pool, DEFAULT_ORG_ID).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].role, Role::Owner);
}

#[tokio::test]
async fn an_organisation_always_keeps_an_owner() {
    let db = TestDb::new().await.unwrap();
    let who = Who::cli();
    let org = accounts::create_org(&db.pool, &who, "team", None)
        .await
        .unwrap();
    let a = accounts::create_user(&db.pool, &who, "a@example.org", PASSWORD)
        .await
        .unwrap();
    let b = accounts::create_user(&db.pool, &who, "b@example.org", PASSWORD)
        .await
        .unwrap();
    accounts::add_member(&db.pool, &who, org.id, a.id, Role::Owner)
        .await
        .unwrap();
    accounts::add_member(&db.pool, &who, org.id, b.id, Role::Admin)
        .await
        .unwrap();
    assert!(matches!(
        accounts::set_role(&db.pool, &who, org.id, a.id, Role::Member).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        accounts::remove_member(&db.pool, &who, org.id, a.id).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        accounts::add_member(&db.pool, &who, org.id, b.id, Role::Viewer).await,
        Err(Error::Conflict(_))
    ));
    accounts::set_role(&db.pool, &who, org.id, b.id, Role::Owner)
        .await
        .unwrap();
    accounts::remove_member(&db.pool, &who, org.id, a.id)
        .await
        .unwrap();
    assert_eq!(
        accounts::role_in(&db.pool, org.id, a.id).await.unwrap(),
        None
    );
    assert!(matches!(
        accounts::create_org(&db.pool, &who, "team", None).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        accounts::create_user(&db.pool, &who, "A@Example.org", PASSWORD).await,
        Err(Error::Conflict(_))
    ));
}

#[tokio::test]
async fn accepting_an_invitation_keeps_the_higher_role_and_uses_it_up() {
    let db = TestDb::new().await.unwrap();
    let who = Who::cli();
    let org = accounts::create_org(&db.pool, &who, "team", None)
        .await
        .unwrap();
    let u = accounts::create_user(&db.pool, &who, "a@example.org", PASSWORD)
        .await
        .unwrap();
    accounts::add_member(&db.pool, &who, org.id, u.id, Role::Admin)
        .await
        .unwrap();
    let (secret, inv) =
        accounts::create_invitation(&db.pool, &who, org.id, "A@example.org", Role::Viewer)
            .await
            .unwrap();
    assert_eq!(
        accounts::invitations(&db.pool, org.id).await.unwrap()[0].id,
        inv.id
    );
    match accounts::accept_invitation(&db.pool, &secret, PASSWORD, "10.9.0.1")
        .await
        .unwrap()
    {
        AcceptOutcome::Accepted {
            role,
            created,
            user,
            ..
        } => {
            assert_eq!(role, Role::Admin);
            assert!(!created);
            assert_eq!(user.id, u.id);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        accounts::invitations(&db.pool, org.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        accounts::accept_invitation(&db.pool, &secret, PASSWORD, "10.9.0.1").await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_signed_in_user_accepts_only_an_invitation_addressed_to_them() {
    let db = TestDb::new().await.unwrap();
    let who = Who::cli();
    let org = accounts::create_org(&db.pool, &who, "team", None)
        .await
        .unwrap();
    let invited = accounts::create_user(&db.pool, &who, "invited@example.org", PASSWORD)
        .await
        .unwrap();
    let other = accounts::create_user(&db.pool, &who, "other@example.org", PASSWORD)
        .await
        .unwrap();
    let (secret, inv) =
        accounts::create_invitation(&db.pool, &who, org.id, "Invited@example.org", Role::Member)
            .await
            .unwrap();

    // Someone else who got hold of the link joins nobody, and the invitation stays open.
    assert!(matches!(
        accounts::accept_invitation_as(&db.pool, &secret, other.id, "10.9.0.2").await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(
        accounts::role_in(&db.pool, org.id, other.id).await.unwrap(),
        None
    );
    assert!(
        accounts::open_invitation(&db.pool, &secret)
            .await
            .unwrap()
            .is_some()
    );

    let (joined, role) = accounts::accept_invitation_as(&db.pool, &secret, invited.id, "10.9.0.2")
        .await
        .unwrap();
    assert_eq!((joined, role), (org.id, Role::Member));
    assert_eq!(
        accounts::role_in(&db.pool, org.id, invited.id)
            .await
            .unwrap(),
        Some(Role::Member)
    );
    // Used up: not open any more, but still found, so the page can say it was used.
    assert!(matches!(
        accounts::accept_invitation_as(&db.pool, &secret, invited.id, "10.9.0.2").await,
        Err(Error::NotFound { .. })
    ));
    assert!(
        accounts::open_invitation(&db.pool, &secret)
            .await
            .unwrap()
            .is_none()
    );
    let used = accounts::invitation_by_secret(&db.pool, &secret)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.id, inv.id);
    assert!(used.accepted_at.is_some());

    // An expired link is found but not open; a withdrawn or made-up one is not found at all.
    let (expired, _) =
        accounts::create_invitation(&db.pool, &who, org.id, "late@example.org", Role::Viewer)
            .await
            .unwrap();
    sqlx::query("update invitation set expires_at = now() - interval '1 day' where email = 'late@example.org'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(
        accounts::open_invitation(&db.pool, &expired)
            .await
            .unwrap()
            .is_none()
    );
    let found = accounts::invitation_by_secret(&db.pool, &expired)
        .await
        .unwrap()
        .unwrap();
    assert!(found.accepted_at.is_none() && found.expires_at < chrono::Utc::now());
    let (withdrawn, w) =
        accounts::create_invitation(&db.pool, &who, org.id, "gone@example.org", Role::Viewer)
            .await
            .unwrap();
    accounts::revoke_invitation(&db.pool, &who, org.id, w.id)
        .await
        .unwrap();
    assert!(
        accounts::invitation_by_secret(&db.pool, &withdrawn)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        accounts::invitation_by_secret(&db.pool, "made-up")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn sessions_follow_memberships_and_tokens_die_with_them() {
    let db = TestDb::new().await.unwrap();
    let who = Who::cli();
    let one = accounts::create_org(&db.pool, &who, "one", None)
        .await
        .unwrap();
    let two = accounts::create_org(&db.pool, &who, "two", None)
        .await
        .unwrap();
    let u = accounts::create_user(&db.pool, &who, "a@example.org", PASSWORD)
        .await
        .unwrap();
    accounts::add_member(&db.pool, &who, one.id, u.id, Role::Member)
        .await
        .unwrap();
    let (secret, s) = accounts::create_session(&db.pool, u.id, None, Some("10.9.0.2"))
        .await
        .unwrap();
    assert_eq!((s.org_id, s.role), (Some(one.id), Some(Role::Member)));
    assert_eq!(s.csrf_token.len(), 64);
    // Not a member of `two`: the switch is refused as not found.
    assert!(matches!(
        accounts::set_session_org(&db.pool, s.id, u.id, two.id).await,
        Err(Error::NotFound { .. })
    ));
    accounts::add_member(&db.pool, &who, two.id, u.id, Role::Viewer)
        .await
        .unwrap();
    assert_eq!(
        accounts::set_session_org(&db.pool, s.id, u.id, two.id)
            .await
            .unwrap(),
        Role::Viewer
    );
    let now = accounts::session_by_secret(&db.pool, &secret)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((now.org_id, now.role), (Some(two.id), Some(Role::Viewer)));
    assert!(
        accounts::session_by_secret(&db.pool, "not-a-session")
            .await
            .unwrap()
            .is_none()
    );

    let (token, _) =
        accounts::create_api_token(&db.pool, &who, u.id, one.id, "t", Scope::Write, None)
            .await
            .unwrap();
    assert!(
        accounts::authenticate_api_token(&db.pool, &token)
            .await
            .unwrap()
            .is_some()
    );
    accounts::remove_member(&db.pool, &who, one.id, u.id)
        .await
        .unwrap();
    assert!(
        accounts::authenticate_api_token(&db.pool, &token)
            .await
            .unwrap()
            .is_none()
    );
    let expired = chrono::Utc::now() - chrono::Duration::seconds(1);
    let (old, _) = accounts::create_api_token(
        &db.pool,
        &who,
        u.id,
        two.id,
        "t",
        Scope::Read,
        Some(expired),
    )
    .await
    .unwrap();
    assert!(
        accounts::authenticate_api_token(&db.pool, &old)
            .await
            .unwrap()
            .is_none()
    );
    // Secrets are stored only as digests.
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("select token_hash from api_token")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert!(
        stored
            .iter()
            .all(|h| h.len() == 32 && h != token.as_bytes())
    );
}

#[tokio::test]
async fn the_sign_in_limit_counts_failures_and_a_success_clears_them() {
    let db = TestDb::new().await.unwrap();
    let who = Who::cli();
    accounts::create_user(&db.pool, &who, "a@example.org", PASSWORD)
        .await
        .unwrap();
    for _ in 0..4 {
        let r = accounts::login(&db.pool, "a@example.org", "wrong password", "10.9.0.3")
            .await
            .unwrap();
        assert!(matches!(r, LoginOutcome::BadCredentials));
    }
    // A success before the limit clears the account's failures.
    let r = accounts::login(&db.pool, "A@example.org", PASSWORD, "10.9.0.3")
        .await
        .unwrap();
    assert!(matches!(r, LoginOutcome::Ok(_)));
    for _ in 0..5 {
        accounts::login(&db.pool, "a@example.org", "wrong password", "10.9.0.3")
            .await
            .unwrap();
    }
    let wait = accounts::login_retry_after(&db.pool, "a@example.org", "10.9.0.4")
        .await
        .unwrap()
        .unwrap();
    assert!(
        wait <= accounts::LOGIN_WINDOW && wait.as_secs() >= 890,
        "{wait:?}"
    );
    let r = accounts::login(&db.pool, "a@example.org", PASSWORD, "10.9.0.4")
        .await
        .unwrap();
    assert!(matches!(r, LoginOutcome::Limited(_)));
    // Unknown accounts are limited alike, so the limit says nothing about who exists.
    for _ in 0..5 {
        let r = accounts::login(&db.pool, "ghost@example.org", "x", "10.9.0.5")
            .await
            .unwrap();
        assert!(matches!(r, LoginOutcome::BadCredentials));
    }
    assert!(matches!(
        accounts::login(&db.pool, "ghost@example.org", "x", "10.9.0.5")
            .await
            .unwrap(),
        LoginOutcome::Limited(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sign_ins_cannot_race_past_the_limit() {
    let db = TestDb::new().await.unwrap();
    accounts::create_user(&db.pool, &Who::cli(), "a@example.org", PASSWORD)
        .await
        .unwrap();
    // Twenty guesses at once, from twenty addresses: only the account's allowance is checked.
    let tries: Vec<_> = (0..20)
        .map(|i| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                accounts::login(
                    &pool,
                    "a@example.org",
                    "wrong password",
                    &format!("10.8.0.{i}"),
                )
                .await
                .unwrap()
            })
        })
        .collect();
    let mut checked = 0;
    for t in tries {
        match t.await.unwrap() {
            LoginOutcome::BadCredentials => checked += 1,
            LoginOutcome::Limited(_) => {}
            LoginOutcome::Ok(_) => panic!("a wrong password signed in"),
        }
    }
    assert_eq!(
        checked,
        accounts::MAX_FAILURES_PER_ACCOUNT,
        "passwords checked beyond the limit"
    );
    // The right password is limited too now.
    let r = accounts::login(&db.pool, "a@example.org", PASSWORD, "10.8.1.1")
        .await
        .unwrap();
    assert!(matches!(r, LoginOutcome::Limited(_)));
}
