import FreightCore
import FreightNode
import Testing

/// The access list on its own (docs/hardening.md): parsing, coverage of patterns, and refusals that name the rule.
struct AccessListTests {
    let text = """
        # comment
        token ci 0123456789abcdef0123
        allow uid:1000 receive,send team-a/**   # a team
        allow gid:50 receive logs/*/errors
        allow token:ci send jobs/**
        allow any send public/**
        """

    func pattern(_ text: String) -> AddressPattern { try! AddressPattern(text) }

    @Test func patternsCoverOnlyWhatTheyMatch() {
        #expect(pattern("team-a/**").covers(pattern("team-a/x/y")))
        #expect(pattern("team-a/**").covers(pattern("team-a/*/y")))
        #expect(pattern("team-a/**").covers(pattern("team-a/x/**")))
        #expect(!pattern("team-a/**").covers(pattern("**")))
        #expect(!pattern("team-a/**").covers(pattern("team-b/x")))
        #expect(pattern("logs/*/errors").covers(pattern("logs/n1/errors")))
        #expect(!pattern("logs/*/errors").covers(pattern("logs/*/*")))
        #expect(!pattern("logs/n1/errors").covers(pattern("logs/*/errors")))
        #expect(pattern("**").covers(pattern("**")))
    }

    @Test func rulesApplyByIdentityAndAction() throws {
        let list = try AccessList.parse(text)
        let alice = AppIdentity(uid: 1000, gid: 1000, pid: 7)
        #expect(list.refusal(alice, .receive, pattern("team-a/inbox")) == nil)
        #expect(list.refusal(alice, .send, pattern("public/x")) == nil, "any")
        let outside = try #require(list.refusal(alice, .receive, pattern("team-b/inbox")))
        #expect(outside.code == .permissionDenied)
        #expect(outside.message.contains("uid 1000") && outside.message.contains("line 3"), "\(outside.message)")
        let logger = AppIdentity(uid: 2000, gid: 50)
        #expect(list.refusal(logger, .receive, pattern("logs/n7/errors")) == nil)
        #expect(list.refusal(logger, .receive, pattern("logs/**")) != nil)
        let nobody = AppIdentity(uid: 3000, gid: 3000)
        #expect(list.refusal(nobody, .receive, pattern("public/x"))?.message.contains("no rule") == true)
        #expect(list.token(secret: "0123456789abcdef0123") == "ci")
        #expect(list.token(secret: "0123456789abcdef012") == nil)
        #expect(list.token(secret: "0123456789abcdef01234") == nil)
        let ci = AppIdentity(token: "ci")
        #expect(list.refusal(ci, .send, pattern("jobs/a/b")) == nil)
        #expect(list.refusal(ci, .receive, pattern("jobs/a/b")) != nil)
    }

    @Test func mistakesNameTheirLine() {
        for (text, words) in [
            ("allow uid:x receive a/**", "line 1"),
            ("token t short\n", "shorter than"),
            ("allow token:nobody send a/**", "not defined"),
            ("\n\nallow any fly a/**", "line 3: action 'fly'"),
            ("permit any send a", "unknown keyword"),
            ("allow any send a/**/b", "line 1: prefix"),
        ] {
            do {
                _ = try AccessList.parse(text)
                Issue.record("\(text) parsed")
            } catch {
                #expect(error.message.contains(words), "\(error.message)")
            }
        }
    }
}
